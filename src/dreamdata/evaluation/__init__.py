"""Sample-quality evaluation: one feature protocol, cached features, and the metrics built on them.

* :mod:`.extractor` — the Inception-v3 protocol (uint8, no-antialias bilinear 299, TF 2015 weights),
  from a local TorchScript file or torch-fidelity;
* :mod:`.feature_cache` — features computed once per image set, keyed by a hash of the pixels;
* :mod:`.metrics` — FID, KID, IS (torchmetrics, fed precomputed features) and improved precision/recall;
* :mod:`.suite` — every metric of a sample set against a reference, with the comparability checks;
* :mod:`.reconstruction` — noise-and-denoise RMSE/SSIM/PSNR and ε-MSE per bucket of t;
* :mod:`.clip_score` — CLIP score per class;
* :mod:`.during_training` — metrics every K training steps.
"""
