"""Experiments: everything that runs many trainings, samplings and scorings and tabulates them.

* :mod:`.runner` - the sweep: a sweep file names a base config, training axes, sampling axes and metrics;
  :func:`~dreamdata.experiments.runner.run_sweep` trains every arm once, scores every cell once and draws
  the figures. The cold-diffusion study is one such sweep (``configs/experiments/constant-schedules.yaml``).
* :mod:`.study` - the synthetic-data study: per K real images per class, train a generator, dream a
  labelled set, train classifiers on real / real+synthetic / synthetic and compare them with paired CIs.
"""
