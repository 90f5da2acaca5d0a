"""Train/dev split: stratified by label (combination), optionally keeping documents together."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, train_test_split


def _strata(labels: list, multilabel: bool) -> np.ndarray:
    if not multilabel:
        return np.array([str(v) for v in labels])
    combos = np.array(["|".join(sorted(v)) or "<none>" for v in labels])
    # rare combinations cannot be stratified: fall back to the first label (or none)
    values, counts = np.unique(combos, return_counts=True)
    rare = set(values[counts < 2])
    return np.array([c if c not in rare else (c.split("|")[0]) for c in combos])


def train_dev_split(
    frame: pd.DataFrame,
    dev_fraction: float,
    *,
    multilabel: bool,
    stratify: bool = True,
    group_by_column: bool = True,
    seed: int = 13,
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the train and dev parts.

    With ``group_by_column`` and a ``group`` column (e.g. the article a sentence comes from), all
    sentences of one group land on the same side, so dev scores are not inflated by near-identical
    neighbours.
    """
    index = np.arange(len(frame))
    strata = _strata(frame["labels"].tolist(), multilabel) if stratify else None
    groups = frame["group"] if "group" in frame.columns else None
    if group_by_column and groups is not None and groups.notna().all() and groups.nunique() >= 4:
        n_splits = max(2, round(1 / dev_fraction))
        y = strata if strata is not None else np.zeros(len(frame))
        # strata rarer than the fold count cannot be spread over folds: merge them
        values, counts = np.unique(y, return_counts=True)
        rare = set(values[counts < n_splits])
        y = np.array(["<rare>" if v in rare else v for v in y])
        if 0 < (y == "<rare>").sum() < n_splits:
            values, counts = np.unique(y, return_counts=True)
            y = np.where(y == "<rare>", values[counts.argmax()], y)
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        train_idx, dev_idx = next(splitter.split(index, y, groups.to_numpy()))
        return train_idx, dev_idx
    if strata is not None:
        values, counts = np.unique(strata, return_counts=True)
        if counts.min() < 2:
            strata = None
    train_idx, dev_idx = train_test_split(index, test_size=dev_fraction, random_state=seed, stratify=strata)
    return np.sort(train_idx), np.sort(dev_idx)
