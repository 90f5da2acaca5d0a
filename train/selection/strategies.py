"""Which pool sentences to label next: uncertainty of a model's scores, spread over sentence vectors, or chance.

Plain numpy and scikit-learn on arrays; the pool, the model and the output live in ``train.selection.select``.
Every strategy takes at most ``cap`` sentences from one article (``groups``: the article of each
sentence; ``None`` is an article of its own) and returns ``(index, score)`` pairs in the order chosen.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from train.models.decision import log_scores

STRATEGIES = ("uncertainty", "diverse", "mixed", "random")
MIXED_FACTOR = 4  # mixed spreads out the 4 x N most uncertain sentences


def multiclass_uncertainty(proba: np.ndarray, offsets: np.ndarray | None = None) -> np.ndarray:
    """1 - margin between the two best classes, after the model's tuned class offsets (0: sure, 1: a tie)."""
    logs = log_scores(proba) + (0.0 if offsets is None else np.asarray(offsets, dtype=float))
    logs -= logs.max(axis=1, keepdims=True)
    q = np.exp(logs)
    q /= q.sum(axis=1, keepdims=True)
    if q.shape[1] < 2:
        return np.zeros(len(q))
    top = np.sort(q, axis=1)[:, -2:]
    return 1.0 - (top[:, 1] - top[:, 0])


def multilabel_uncertainty(proba: np.ndarray, thresholds: np.ndarray | None = None) -> np.ndarray:
    """How close the label nearest its tuned threshold is to it: 1 at the threshold, 0 at score 0 or 1.

    The distance to a threshold ``t`` is scaled by the room on that side (``t`` below, ``1 - t``
    above), so labels with low and high thresholds compare.
    """
    t = np.full(proba.shape[1], 0.5) if thresholds is None else np.asarray(thresholds, dtype=float)
    t = np.clip(t, 1e-6, 1 - 1e-6)
    distance = np.where(proba >= t, (proba - t) / (1 - t), (t - proba) / t)
    return 1.0 - np.clip(distance, 0.0, 1.0).min(axis=1)


class ArticleCap:
    """Counts the sentences taken per article and says which may still be taken (``cap`` 0: no cap)."""

    def __init__(self, groups: Sequence[str | None], cap: int):
        self.groups = list(groups)
        self.cap = cap
        self.counts: dict[str, int] = defaultdict(int)
        self.members: dict[str, list[int]] = defaultdict(list)
        for i, group in enumerate(self.groups):
            if group is not None:
                self.members[group].append(i)

    def allows(self, i: int) -> bool:
        group = self.groups[i]
        return not self.cap or group is None or self.counts[group] < self.cap

    def take(self, i: int) -> list[int]:
        """Record ``i`` as taken; return the sentences its article now closes to (empty while under the cap)."""
        group = self.groups[i]
        if not self.cap or group is None:
            return []
        self.counts[group] += 1
        return self.members[group] if self.counts[group] >= self.cap else []


def take_in_order(order: Sequence[int], n: int, groups: Sequence[str | None], cap: int) -> list[int]:
    """The first ``n`` of ``order`` that the article cap lets through."""
    limit = ArticleCap(groups, cap)
    chosen = []
    for i in order:
        if len(chosen) == n:
            break
        if limit.allows(i):
            limit.take(i)
            chosen.append(int(i))
    return chosen


def sentence_vectors(texts: Sequence[str]):
    """L2-normalised TF-IDF vectors of character 2-4-grams (within words): fast, no model, robust to inflection."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True, dtype=np.float32)
    return vectorizer.fit_transform(texts)


def k_center_greedy(
    vectors, n: int, first: int, groups: Sequence[str | None], cap: int
) -> list[tuple[int, float | None]]:
    """Greedy k-center (Gonzalez 1985; Sener and Savarese 2018) under the article cap.

    Starts at ``first``; each next pick is the sentence farthest (cosine distance) from every pick so
    far. Returns ``(index, distance to the nearest earlier pick)``; the first has ``None``.
    """
    size = vectors.shape[0]
    nearest = np.full(size, np.inf)
    open_ = np.ones(size, dtype=bool)
    limit = ArticleCap(groups, cap)
    chosen: list[tuple[int, float | None]] = []
    pick, distance = first, None
    while len(chosen) < n:
        chosen.append((pick, distance))
        open_[pick] = False
        open_[limit.take(pick)] = False
        similarity = vectors @ vectors[pick].toarray().ravel()  # sparse matrix x dense vector: O(non-zeros)
        nearest = np.minimum(nearest, np.clip(1.0 - similarity, 0.0, 2.0))
        if not open_.any():
            break
        candidates = np.where(open_, nearest, -np.inf)
        pick = int(candidates.argmax())  # ties: the earliest sentence
        distance = float(nearest[pick])
    return chosen


def choose(
    strategy: str,
    n: int,
    uncertainty: np.ndarray,
    texts: Sequence[str],
    groups: Sequence[str | None],
    cap: int,
    seed: int,
) -> list[tuple[int, float | None]]:
    """Up to ``n`` sentence indices by ``strategy``, each with its score (uncertainty, or k-center distance)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy '{strategy}' (choose from {', '.join(STRATEGIES)})")
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(len(texts))  # ties are broken by chance, the same for the same seed
    if strategy == "random":
        return [(i, None) for i in take_in_order(shuffled, n, groups, cap)]
    by_uncertainty = shuffled[np.argsort(-uncertainty[shuffled], kind="stable")]
    if strategy == "uncertainty":
        return [(i, float(uncertainty[i])) for i in take_in_order(by_uncertainty, n, groups, cap)]
    if strategy == "diverse":
        pool = np.arange(len(texts))
        first = int(shuffled[0])
    else:  # mixed: the most uncertain candidates (within the cap), spread out, from the most uncertain one
        pool = np.array(take_in_order(by_uncertainty, MIXED_FACTOR * n, groups, cap), dtype=int)
        first = 0
    vectors = sentence_vectors([texts[i] for i in pool])
    picks = k_center_greedy(vectors, n, first, [groups[i] for i in pool], cap)
    return [(int(pool[i]), distance) for i, distance in picks]
