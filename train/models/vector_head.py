"""A logistic-regression head on sentence vectors, shared by the embedding families.

``embedding_logreg`` (frozen encoder) and ``static_logreg`` (static token vectors) differ only in how
a list of texts becomes vectors (``_encode``); the features and the head are the same. For stance
the target's vector and the element-wise product are concatenated to the sentence's.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier

from train.models.base import TextClassifier, mask_actors
from train.models.persistence import dump_sklearn, load_sklearn
from train.models.weighting import fit_weighted


class SentenceVectorLogReg(TextClassifier):
    """Base of families that encode sentences to vectors and fit a logistic-regression head on them.

    Subclasses' ``Params`` have ``C``, ``class_weight``, ``use_target``, ``mask_target_actors`` and
    ``cache_dir``; they implement ``_encode``.
    """

    def _encode(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    def _cache_folder(self, kind: str) -> Path:
        """``cache_dir``, else ``$TAGGER_HOME/.cache/<kind>`` (``./.cache/<kind>`` without TAGGER_HOME)."""
        return Path(self.params["cache_dir"] or Path(os.environ.get("TAGGER_HOME", ".")) / ".cache" / kind)

    def _features(self, X: pd.DataFrame) -> np.ndarray:
        texts = X["text"].astype(str).tolist()
        targets = X["target"].fillna("").astype(str).tolist() if "target" in X.columns else [""] * len(texts)
        use_target = not self.multilabel and self.params["use_target"] and any(t.strip() for t in targets)
        if use_target and self.params["mask_target_actors"]:
            texts = [mask_actors(t, g) for t, g in zip(texts, targets, strict=True)]
        features = self._encode(texts)
        if use_target:
            unique = list(dict.fromkeys(targets))  # a batch has few targets: encode each once
            vectors = self._encode(unique)
            index = {target: i for i, target in enumerate(unique)}
            target_vectors = vectors[[index[t] for t in targets]]
            features = np.hstack([features, target_vectors, features * target_vectors])
        return features

    supports_sample_weight = True

    def _fit(self, X, Y, X_dev, Y_dev, sample_weight: np.ndarray | None = None) -> None:
        head = LogisticRegression(
            C=self.params["C"], class_weight=self.params["class_weight"], max_iter=3000, random_state=self.seed
        )
        self.head_ = OneVsRestClassifier(head) if self.multilabel else head
        fit_weighted(self.head_, self._features(X), Y, sample_weight)

    def _scores(self, X: pd.DataFrame) -> np.ndarray:
        return self.head_.predict_proba(self._features(X))

    def learned_state(self) -> dict:
        return {}

    def _save_weights(self, folder: Path) -> None:
        """The head (skops); subclasses add their encoder."""
        dump_sklearn(self.head_, folder / "head.skops")

    def _load_weights(self, folder: Path) -> None:
        self.head_ = load_sklearn(folder / "head.skops")
