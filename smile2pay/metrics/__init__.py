"""Accuracy metrics (pure NumPy functions on scores and labels; no face code)."""
from .verification import (Det, Roc, accuracy_at, best_threshold, clopper_pearson, det_curve, eer,
                           far_upper_bound, kfold_accuracy, min_impostors, probit, roc_auc, roc_curve,
                           tar_at_far, verification_report)

__all__ = [
    "Roc", "Det", "roc_curve", "roc_auc", "eer", "tar_at_far", "clopper_pearson", "far_upper_bound",
    "min_impostors", "best_threshold", "accuracy_at", "kfold_accuracy", "det_curve", "probit",
    "verification_report",
]
