"""Evaluation metrics for multi-label and multi-class tagging, with bootstrap confidence intervals."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    hamming_loss,
    precision_recall_fscore_support,
)

from train.tracking import safe_name


def per_label(label: str, values: dict[str, float]) -> dict[str, float]:
    """``{"f1": x}`` → ``{"f1_<label>": x}``, with the label made safe for MLflow, so a benchmark's label
    such as "Business & Finance" logs as ``f1_Business _ Finance``."""
    name = safe_name(label)
    return {f"{key}_{name}": value for key, value in values.items()}


def multilabel_metrics(Y: np.ndarray, P: np.ndarray, labels: list[str]) -> dict[str, float]:
    """Per-label P/R/F1/support, micro and macro F1, subset accuracy and Hamming loss."""
    p, r, f, s = precision_recall_fscore_support(Y, P, average=None, zero_division=0, labels=range(len(labels)))
    out = {}
    for j, label in enumerate(labels):
        out.update(per_label(label, {"precision": p[j], "recall": r[j], "f1": f[j], "support": float(s[j])}))
    out["f1_micro"] = f1_score(Y, P, average="micro", zero_division=0)
    out["f1_macro"] = f1_score(Y, P, average="macro", zero_division=0)
    out["subset_accuracy"] = accuracy_score(Y, P)
    out["hamming_loss"] = hamming_loss(Y, P)
    return {k: float(v) for k, v in out.items()}


def multiclass_metrics(y: np.ndarray, p: np.ndarray, labels: list[str]) -> dict[str, float]:
    """Per-class P/R/F1/support, macro F1, accuracy, and SemEval-2016's F_avg (favor, against)."""
    idx = list(range(len(labels)))
    pr, rc, f, s = precision_recall_fscore_support(y, p, labels=idx, average=None, zero_division=0)
    out = {}
    for j, label in enumerate(labels):
        out.update(per_label(label, {"precision": pr[j], "recall": rc[j], "f1": f[j], "support": float(s[j])}))
    out["f1_macro"] = f1_score(y, p, labels=idx, average="macro", zero_division=0)
    out["accuracy"] = accuracy_score(y, p)
    if "favor" in labels and "against" in labels:
        out["f_avg"] = (out["f1_favor"] + out["f1_against"]) / 2
    return {k: float(v) for k, v in out.items()}


def macro_f1_onehot(G: np.ndarray, P: np.ndarray) -> np.ndarray:
    """Macro F1 over the last axis of indicator arrays (F1 of a label with no gold and no predicted = 0)."""
    tp = (G * P).sum(axis=-2)
    fp = ((1 - G) * P).sum(axis=-2)
    fn = (G * (1 - P)).sum(axis=-2)
    denominator = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denominator, out=np.zeros(denominator.shape), where=denominator > 0)
    return f1.mean(axis=-1)


def bootstrap_ci(
    gold: np.ndarray,
    pred: np.ndarray,
    n_labels: int,
    samples: int = 1000,
    confidence: float = 0.95,
    seed: int = 13,
) -> tuple[float, float]:
    """Percentile bootstrap interval of macro F1 over resampled sentences.

    ``gold``/``pred`` are indicator matrices (multi-label) or class indices (multi-class); all
    resamples are scored at once with array arithmetic.
    """
    if samples <= 0 or len(gold) == 0:
        return float("nan"), float("nan")
    if gold.ndim == 1:
        eye = np.eye(n_labels, dtype=int)
        gold, pred = eye[gold], eye[pred]
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(gold), size=(samples, len(gold)))
    values = macro_f1_onehot(gold[index], pred[index])
    alpha = (1 - confidence) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return float(low), float(high)
