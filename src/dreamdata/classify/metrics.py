"""Confusion matrix and per-class precision, recall and F1, from predicted and true labels.

Convention: ``confusion[i, j]`` counts images of true class ``i`` predicted as class ``j`` (rows = truth),
so row sums are class supports and the diagonal holds the correct predictions. A class that is never
predicted has precision 0 (not NaN), and likewise for recall of a class with no images, so that the
averages stay defined; ``support`` says how much each number rests on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def confusion_matrix(true: torch.Tensor, predicted: torch.Tensor, num_classes: int) -> torch.Tensor:
    """int64 ``[num_classes, num_classes]``; entry ``[i, j]`` = #images of class ``i`` predicted ``j``."""
    true = torch.as_tensor(true, dtype=torch.long).flatten().cpu()
    predicted = torch.as_tensor(predicted, dtype=torch.long).flatten().cpu()
    if true.shape != predicted.shape:
        raise ValueError(f"true has {true.numel()} labels, predicted {predicted.numel()}")
    flat = true * num_classes + predicted
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


@dataclass
class ClassScores:
    """Per-class scores (float64 ``[K]``) and their macro averages."""

    precision: torch.Tensor
    recall: torch.Tensor
    f1: torch.Tensor
    support: torch.Tensor  # images of each true class

    def macro(self) -> dict[str, float]:
        return {"precision": float(self.precision.mean()), "recall": float(self.recall.mean()),
                "f1": float(self.f1.mean())}


def _safe_divide(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    return torch.where(denominator > 0, numerator / denominator.clamp(min=1e-300), torch.zeros_like(numerator))


def class_scores(confusion: torch.Tensor) -> ClassScores:
    """Precision = TP / (TP + FP) (column), recall = TP / (TP + FN) (row), F1 = their harmonic mean."""
    confusion = confusion.to(torch.float64)
    true_positive = confusion.diagonal()
    predicted = confusion.sum(dim=0)
    actual = confusion.sum(dim=1)
    precision = _safe_divide(true_positive, predicted)
    recall = _safe_divide(true_positive, actual)
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    return ClassScores(precision, recall, f1, actual.to(torch.int64))


def accuracy(confusion: torch.Tensor) -> float:
    """Fraction of images on the diagonal."""
    total = int(confusion.sum())
    return float(confusion.diagonal().sum()) / total if total else float("nan")
