"""Scores → decisions, tuned on held-out scores: per-label thresholds (multi-label), class offsets (multi-class).

Both are chosen on scores the model did not train on (dev, or out-of-fold scores in cross-validation)
to maximise an objective, and stored on the model, so every place that predicts (CLI, pyfunc,
service) decides the same way.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

OBJECTIVES = ("f1_macro", "f_avg", "accuracy")
OFFSET_GRID = np.round(np.linspace(-2.0, 2.0, 41), 2)  # added to log-scores: a factor of e^-2 .. e^2
OFFSET_ROUNDS = 3


def best_thresholds(proba: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Per label, the score threshold that maximises F1 of ``proba`` against indicator matrix ``Y``.

    Candidates are 0.5 and every score (clipped to [0.05, 0.95]); F1 at all of them comes from
    sorted counts at once. Among ties the threshold closest to 0.5 wins, so the choice is stable; a
    label without positives keeps 0.5.
    """
    thresholds = []
    for j in range(Y.shape[1]):
        positive = Y[:, j].astype(bool)
        if not positive.any():
            thresholds.append(0.5)
            continue
        candidates = np.unique(np.concatenate([[0.5], np.clip(proba[:, j], 0.05, 0.95)]))
        pos, neg = np.sort(proba[positive, j]), np.sort(proba[~positive, j])
        tp = len(pos) - np.searchsorted(pos, candidates, side="left")  # scores >= threshold
        fp = len(neg) - np.searchsorted(neg, candidates, side="left")
        fn = len(pos) - tp
        denominator = 2 * tp + fp + fn
        f1s = np.divide(2 * tp, denominator, out=np.zeros(len(candidates)), where=denominator > 0)
        ties = candidates[f1s >= f1s.max() - 1e-12]
        thresholds.append(float(ties[np.argmin(np.abs(ties - 0.5))]))
    return np.array(thresholds)


def log_scores(proba: np.ndarray) -> np.ndarray:
    return np.log(np.clip(proba, 1e-12, 1.0))


def apply_offsets(proba: np.ndarray, offsets: np.ndarray | None) -> np.ndarray:
    """Class indices chosen by arg-max of log-score plus offset (plain arg-max without offsets)."""
    if offsets is None or not np.any(offsets):
        return proba.argmax(axis=1)
    return (log_scores(proba) + offsets).argmax(axis=1)


def class_objective(name: str, labels: list[str]) -> Callable[[np.ndarray, np.ndarray], float]:
    """``objective(gold, pred)`` on class indices: macro F1, F_avg (mean F1 of favor and against) or accuracy."""
    k = len(labels)
    if name == "accuracy":
        return lambda gold, pred: float(np.mean(gold == pred))
    if name == "f_avg":
        if "favor" not in labels or "against" not in labels:
            raise ValueError(f"objective f_avg needs the labels 'favor' and 'against' (labels: {', '.join(labels)})")
        chosen = [labels.index("favor"), labels.index("against")]
    elif name == "f1_macro":
        chosen = list(range(k))
    else:
        raise ValueError(f"unknown decision objective '{name}' (choose from {', '.join(OBJECTIVES)})")

    def objective(gold: np.ndarray, pred: np.ndarray) -> float:
        confusion = np.bincount(gold * k + pred, minlength=k * k).reshape(k, k)
        tp = np.diag(confusion)
        denominator = confusion.sum(axis=0) + confusion.sum(axis=1)  # predicted + gold = 2tp + fp + fn
        f1 = np.divide(2 * tp, denominator, out=np.zeros(k), where=denominator > 0)
        return float(f1[chosen].mean())

    return objective


def best_offsets(proba: np.ndarray, y: np.ndarray, labels: list[str], objective: str = "f1_macro") -> np.ndarray:
    """Class offsets on log-scores that maximise ``objective`` of arg-max decisions against ``y``.

    Coordinate ascent over a grid (``OFFSET_GRID``), a few rounds, one class at a time; the first
    class stays at 0 (only differences matter). Only a strict gain moves an offset, and among equal
    values the one closest to 0 wins, so scores without a better decision keep plain arg-max.
    """
    score = class_objective(objective, labels)
    logs = log_scores(proba)
    offsets = np.zeros(len(labels))
    best = score(y, logs.argmax(axis=1))
    by_size = OFFSET_GRID[np.argsort(np.abs(OFFSET_GRID), kind="stable")]
    for _ in range(OFFSET_ROUNDS):
        moved = False
        for j in range(1, len(labels)):
            for value in by_size:
                trial = offsets.copy()
                trial[j] = value
                candidate = score(y, (logs + trial).argmax(axis=1))
                if candidate > best + 1e-12:
                    best, offsets, moved = candidate, trial, True
        if not moved:
            break
    return offsets
