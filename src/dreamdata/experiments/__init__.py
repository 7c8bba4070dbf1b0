"""Experiments as data: a sweep file names a base config, training axes, sampling axes and metrics;
:func:`~dreamdata.experiments.runner.run_sweep` trains every arm once, scores every cell once and draws the
figures. The cold-diffusion study is one such sweep (``configs/experiments/constant-schedules.yaml``)."""
