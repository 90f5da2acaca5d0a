"""Cross-validation folds that keep groups together and balance every label across folds.

Iterative stratification (Sechidis, Tsoumakas and Vlahavas, 2011) applied to groups instead of
sentences: groups are handed out label by label, rarest label first, each to the fold that still
wants that label most (ties: the fold that wants the most sentences, then at random). Multi-class
labels are one-hot, so one routine serves both task types. Without groups every sentence is its own
group.
"""

from __future__ import annotations

import numpy as np


def grouped_stratified_folds(Y: np.ndarray, groups: np.ndarray | None, n_folds: int, seed: int = 13) -> np.ndarray:
    """The fold (0..n_folds-1) of each row of the indicator matrix ``Y``, groups never split."""
    Y = np.asarray(Y, dtype=float)
    n = len(Y)
    if groups is None:
        groups = np.arange(n)
    names, group_of_row = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
    if len(names) < n_folds:
        raise ValueError(f"{len(names)} groups cannot fill {n_folds} folds")
    rng = np.random.default_rng(seed)
    label_counts = np.zeros((len(names), Y.shape[1]))
    np.add.at(label_counts, group_of_row, Y)
    sizes = np.bincount(group_of_row, minlength=len(names)).astype(float)
    want_labels = np.tile(label_counts.sum(axis=0) / n_folds, (n_folds, 1))
    want_rows = np.full(n_folds, n / n_folds)
    fold_of_group = np.full(len(names), -1)
    remaining = set(range(len(names)))

    def place(group: int, label: int | None) -> None:
        demand = want_labels[:, label] if label is not None else want_rows
        best = np.flatnonzero(demand == demand.max())
        if len(best) > 1:
            rows = want_rows[best]
            best = best[rows == rows.max()]
        fold = int(rng.choice(best))
        fold_of_group[group] = fold
        want_labels[fold] -= label_counts[group]
        want_rows[fold] -= sizes[group]
        remaining.discard(group)

    while remaining:
        left = np.array(sorted(remaining))
        totals = label_counts[left].sum(axis=0)
        present = np.flatnonzero(totals > 0)
        if len(present) == 0:  # groups without any label: fill the folds that want rows
            for group in rng.permutation(left):
                place(int(group), None)
            break
        label = int(present[np.argmin(totals[present])])
        holders = left[label_counts[left, label] > 0]
        holders = holders[rng.permutation(len(holders))]
        for group in holders[np.argsort(-label_counts[holders, label], kind="stable")]:
            place(int(group), label)
    return fold_of_group[group_of_row]
