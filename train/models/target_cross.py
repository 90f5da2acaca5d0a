"""Target-aware features: word n-grams crossed with the stance target (feature augmentation).

Daumé III's "frustratingly easy" domain adaptation, with targets as domains: each word n-gram is a
shared feature (the ordinary word block) and, for a target seen often enough in training, also a
feature of that target alone. A linear model can then learn that a phrase means favor for one
target and against for another, while targets it never saw (or saw rarely) fall back to the shared
weights: their crossed block is empty.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_extraction.text import TfidfVectorizer


class TargetCrossedWords(TransformerMixin, BaseEstimator):
    """Word TF-IDF of ``text``, copied into the block of the row's ``target`` (one block per known target).

    ``min_sentences``: a target needs this many training sentences for a block of its own (rarer
    targets, e.g. one-off headline pairs, use the shared weights only). ``min_df``: only n-grams in at
    least this many training sentences get target copies, which keeps the weights small. ``analyzer``:
    word n-grams by default; ``char`` or ``char_wb`` crosses character n-grams instead.
    """

    def __init__(
        self,
        ngram_range: tuple[int, int] = (1, 2),
        min_df: int = 2,
        sublinear_tf: bool = True,
        lowercase: bool = True,
        min_sentences: int = 30,
        analyzer: str = "word",
    ):
        self.ngram_range = ngram_range
        self.min_df = min_df
        self.sublinear_tf = sublinear_tf
        self.lowercase = lowercase
        self.min_sentences = min_sentences
        self.analyzer = analyzer

    def fit(self, X: pd.DataFrame, y=None) -> TargetCrossedWords:
        texts, targets = self._columns(X)
        counts = Counter(targets)
        known = sorted(t for t, n in counts.items() if t.strip() and n >= self.min_sentences)
        self.targets_ = {target: slot for slot, target in enumerate(known)}
        rows = [i for i, t in enumerate(targets) if t in self.targets_]
        self.vectorizer_ = TfidfVectorizer(
            analyzer=self.analyzer,
            ngram_range=tuple(self.ngram_range),
            min_df=min(self.min_df, max(len(rows), 1)),
            sublinear_tf=self.sublinear_tf,
            lowercase=self.lowercase,
        )
        self.vectorizer_.fit([texts[i] for i in rows] or ["_"])
        return self

    def transform(self, X: pd.DataFrame) -> sp.csr_matrix:
        texts, targets = self._columns(X)
        return self.cross(self.vectorizer_.transform(texts), targets)

    def cross(self, words: sp.csr_matrix, targets: list[str]) -> sp.csr_matrix:
        """Move each row's word features into its target's block; rows of unknown targets become empty."""
        width = words.shape[1]
        slots = np.array([self.targets_.get(t, -1) for t in targets], dtype=np.int64)
        rows = np.repeat(np.arange(words.shape[0]), np.diff(words.indptr))
        slot = slots[rows]
        keep = slot >= 0
        return sp.csr_matrix(
            (words.data[keep], (rows[keep], words.indices[keep] + slot[keep] * width)),
            shape=(words.shape[0], width * max(len(self.targets_), 1)),
        )

    @staticmethod
    def _columns(X: pd.DataFrame) -> tuple[list[str], list[str]]:
        return [str(t) for t in X["text"]], [str(t) for t in X["target"]]

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        words = self.vectorizer_.get_feature_names_out()
        return np.array([f"{target}::{word}" for target in self.targets_ for word in words], dtype=object)
