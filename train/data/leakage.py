"""Leakage check: training sentences must not be evaluation sentences or near-copies of them.

Texts are normalised (case, punctuation, whitespace) and compared by exact match and by the
Jaccard similarity of their character 5-gram sets; a pair at or above the threshold (0.8 by
default) is a leak. Set intersections come from one sparse matrix product, so the check is fast.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import numpy as np
from sklearn.feature_extraction.text import CountVectorizer

NGRAM = 5


@dataclass(frozen=True)
class Leak:
    train_index: int
    eval_index: int
    similarity: float
    train_text: str
    eval_text: str


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    text = re.sub(r"[^\w\s]", " ", text)
    return re.sub(r"\s+", " ", text).strip()


def find_leaks(train_texts: list[str], eval_texts: list[str], threshold: float = 0.8) -> list[Leak]:
    """Every (train, eval) pair that is identical after normalising or has Jaccard >= threshold."""
    if not train_texts or not eval_texts:
        return []
    a = [normalise(t) for t in train_texts]
    b = [normalise(t) for t in eval_texts]
    vectorizer = CountVectorizer(analyzer="char", ngram_range=(NGRAM, NGRAM), binary=True, lowercase=False)
    vectorizer.fit(a + b)
    A, B = vectorizer.transform(a), vectorizer.transform(b)
    inter = (A @ B.T).toarray().astype(float)
    size_a = np.asarray(A.sum(axis=1)).ravel()[:, None]
    size_b = np.asarray(B.sum(axis=1)).ravel()[None, :]
    union = size_a + size_b - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        jaccard = np.where(union > 0, inter / union, 0.0)
    # identical normalised texts too short to have any 5-gram still count as leaks
    positions: dict[str, list[int]] = {}
    for j, text in enumerate(b):
        positions.setdefault(text, []).append(j)
    for i, text in enumerate(a):
        for j in positions.get(text, ()):
            jaccard[i, j] = 1.0
    rows, cols = np.nonzero(jaccard >= threshold)
    return [
        Leak(int(i), int(j), float(jaccard[i, j]), train_texts[i], eval_texts[j])
        for i, j in zip(rows, cols, strict=True)
    ]


def describe(leaks: list[Leak], limit: int = 3) -> str:
    shown = "; ".join(
        f"train #{leak.train_index} ~ eval #{leak.eval_index} ({leak.similarity:.2f}): {leak.train_text[:70]!r}"
        for leak in leaks[:limit]
    )
    more = f" (+{len(leaks) - limit} more)" if len(leaks) > limit else ""
    return shown + more
