"""Training: the resumable loop, its run directory, checkpoints, EMA and DDP plumbing."""
