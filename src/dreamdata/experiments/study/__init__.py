"""Synthetic-data studies: does dreamed data help a classifier, measured over seeds with paired statistics.

* :mod:`~dreamdata.experiments.study.arms` - training sets of a study's arms (real, synthetic, real+synthetic).
* :mod:`~dreamdata.experiments.study.augment` - train every arm over seeds, evaluate on the real test split, report.
* :mod:`~dreamdata.experiments.study.budgets` - each K's budgets, resolved before anything runs from a rule stated in
  advance (classifier epochs, dreamed count as a multiple of K) or from explicit lists.
* :mod:`~dreamdata.experiments.study.pipeline` - the whole study from a config: train the generative model on K real
  images per class, dream, augment.
"""
