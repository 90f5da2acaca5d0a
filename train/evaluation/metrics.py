"""Evaluation metrics for multi-label and multi-class tagging, with bootstrap confidence intervals."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    hamming_loss,
    precision_recall_fscore_support,
)

from train.tracking.store import safe_name


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


def f1_per_label(G: np.ndarray, P: np.ndarray) -> np.ndarray:
    """F1 of each label (last axis) of indicator arrays; a label with no gold and no predicted scores 0."""
    tp = (G * P).sum(axis=-2)
    fp = ((1 - G) * P).sum(axis=-2)
    fn = (G * (1 - P)).sum(axis=-2)
    denominator = 2 * tp + fp + fn
    return np.divide(2 * tp, denominator, out=np.zeros(denominator.shape), where=denominator > 0)


def macro_f1_onehot(G: np.ndarray, P: np.ndarray) -> np.ndarray:
    """Macro F1 over the last axis of indicator arrays (F1 of a label with no gold and no predicted = 0)."""
    return f1_per_label(G, P).mean(axis=-1)


def headline_metrics(labels: list[str], multilabel: bool) -> dict:
    """The headline metrics of a task, each as a function of indicator arrays (resamples on axis 0).

    These are the metrics shown after training and given a bootstrap interval.
    """

    def micro_f1(G, P):
        tp, fp, fn = ((G * P).sum((-2, -1)), ((1 - G) * P).sum((-2, -1)), (G * (1 - P)).sum((-2, -1)))
        denominator = 2 * tp + fp + fn
        return np.divide(2 * tp, denominator, out=np.zeros(np.shape(denominator)), where=denominator > 0)

    if multilabel:
        return {
            "f1_macro": macro_f1_onehot,
            "f1_micro": micro_f1,
            "hamming_loss": lambda G, P: (G != P).mean(axis=(-2, -1)),
        }
    metrics = {"f1_macro": macro_f1_onehot, "accuracy": lambda G, P: (G == P).all(axis=-1).mean(axis=-1)}
    if "favor" in labels and "against" in labels:
        pair = [labels.index("favor"), labels.index("against")]
        metrics["f_avg"] = lambda G, P: f1_per_label(G, P)[..., pair].mean(axis=-1)
    return metrics


def bootstrap_cis(
    gold: np.ndarray,
    pred: np.ndarray,
    labels: list[str],
    multilabel: bool,
    samples: int = 1000,
    confidence: float = 0.95,
    seed: int = 13,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of every headline metric, over resampled sentences.

    ``gold``/``pred`` are indicator matrices (multi-label) or class indices (multi-class); all
    resamples are scored at once with array arithmetic.
    """
    metrics = headline_metrics(labels, multilabel)
    if samples <= 0 or len(gold) == 0:
        return {name: (float("nan"), float("nan")) for name in metrics}
    if gold.ndim == 1:
        eye = np.eye(len(labels), dtype=int)
        gold, pred = eye[gold], eye[pred]
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(gold), size=(samples, len(gold)))
    G, P = gold[index], pred[index]
    alpha = (1 - confidence) / 2
    intervals = {}
    for name, metric in metrics.items():
        low, high = np.quantile(metric(G, P), [alpha, 1 - alpha])
        intervals[name] = (float(low), float(high))
    return intervals


# What a run logs as top-level metrics (columns in the tracking UI): each set's headline figures and
# the interval of its macro F1. Per-label figures, subset accuracy and the other intervals stay in the
# set's metrics JSON and per-label table (``per_label_table``), so an experiment has about 20 columns.
LOGGED = frozenset({"f1_macro", "f1_macro_ci_low", "f1_macro_ci_high", "f1_micro", "accuracy", "f_avg", "hamming_loss"})


def logged(metrics: dict[str, float]) -> dict[str, float]:
    """The finite headline entries of a set's ``metrics`` (names without the set prefix; a corpus prefix
    such as ``<corpus>/f1_macro`` is kept), the ones logged as top-level metrics."""
    return {k: v for k, v in metrics.items() if k.rsplit("/", 1)[-1] in LOGGED and np.isfinite(v)}


def logged_summary(summary: dict[str, float]) -> dict[str, float]:
    """The finite ``cv/<headline>_mean`` and ``_std`` entries of a CV summary (``cv/<metric>_mean``, ...)."""
    return {
        k: v
        for k, v in summary.items()
        if k.rsplit("/", 1)[-1].removesuffix("_mean").removesuffix("_std") in LOGGED and np.isfinite(v)
    }


def per_label_table(metrics: dict[str, float], labels: list[str]):
    """One row per label: precision, recall, F1 and support from a set's ``metrics`` (a DataFrame)."""
    import pandas as pd

    figures = ("precision", "recall", "f1", "support")
    rows = [{"label": label, **{f: metrics.get(f"{f}_{safe_name(label)}") for f in figures}} for label in labels]
    return pd.DataFrame(rows, columns=["label", *figures])
