"""Classifiers for synthetic-data studies: networks, fast trainer, metrics and paired statistics.

* :mod:`~dreamdata.classify.networks` - the reports' small CNN and a CIFAR ResNet-18.
* :mod:`~dreamdata.classify.train` - airbench-style training: resident data, batched flip/translate,
  a fixed budget of optimiser steps.
* :mod:`~dreamdata.classify.metrics` - confusion matrix, per-class precision/recall/F1.
* :mod:`~dreamdata.classify.stats` - paired t-test: mean difference, 95% CI, p-value.
* :mod:`~dreamdata.classify.checkpoint` - classifiers as safetensors (for filtering dreamed images).
"""

from dreamdata.classify.metrics import accuracy, class_scores, confusion_matrix
from dreamdata.classify.networks import CLASSIFIERS, build_classifier
from dreamdata.classify.stats import mean_std, paired_comparison
from dreamdata.classify.train import (
    ClassifierConfig,
    predict_probabilities,
    train_classifier,
)

__all__ = [
    "CLASSIFIERS",
    "ClassifierConfig",
    "accuracy",
    "build_classifier",
    "class_scores",
    "confusion_matrix",
    "mean_std",
    "paired_comparison",
    "predict_probabilities",
    "train_classifier",
]
