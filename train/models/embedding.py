"""``embedding_logreg`` family: frozen sentence embeddings + a scikit-learn logistic-regression head.

Embeddings are the mean-pooled, normalised outputs of the encoder (all-MiniLM-L6-v2 by default),
cached on disk by model and text hash, so a second run over the same data skips encoding. For
stance the target's embedding is concatenated to the sentence's.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier

from train.models.base import TextClassifier, mask_actors
from train.models.encoder import EmbeddingCache, SentenceEncoder, resolve_encoder, set_threads
from train.models.params import EmbeddingParams
from train.registry import model_families


@model_families.register("embedding_logreg")
class EmbeddingLogReg(TextClassifier):
    """Logistic regression on frozen encoder embeddings."""

    Params = EmbeddingParams
    requirements = ("torch", "transformers")

    def __init__(self, task_type: str, labels: list[str], seed: int = 13, **params):
        super().__init__(task_type, labels, seed)
        self.params = self.Params(**params).model_dump()

    def _cache(self) -> EmbeddingCache:
        if getattr(self, "cache_", None) is None:
            set_threads(self.params["torch_threads"])
            reference = getattr(self, "encoder_dir_", None) or resolve_encoder(self.params["name_or_path"])
            encoder = SentenceEncoder(str(reference), self.params["max_length"], self.params["batch_size"])
            folder = self.params["cache_dir"] or Path(os.environ.get("TAGGER_HOME", ".")) / ".cache" / "embeddings"
            # a loaded model (serving, evaluation) keeps a bounded cache in memory only: no files
            # derived from user text, no growth without bound
            persist = getattr(self, "persist_embeddings_", True)
            self.cache_ = EmbeddingCache(Path(folder) if persist else None, encoder)
        return self.cache_

    def _features(self, X: pd.DataFrame) -> np.ndarray:
        texts = X["text"].astype(str).tolist()
        targets = X["target"].fillna("").astype(str).tolist() if "target" in X.columns else [""] * len(texts)
        use_target = not self.multilabel and self.params["use_target"] and any(t.strip() for t in targets)
        if use_target and self.params["mask_target_actors"]:
            texts = [mask_actors(t, g) for t, g in zip(texts, targets, strict=True)]
        features = self._cache().encode(texts)
        if use_target:
            target_vectors = self._cache().encode(targets)
            features = np.hstack([features, target_vectors, features * target_vectors])
        return features

    def _fit(self, X, Y, X_dev, Y_dev) -> None:
        head = LogisticRegression(
            C=self.params["C"], class_weight=self.params["class_weight"], max_iter=3000, random_state=self.seed
        )
        self.head_ = OneVsRestClassifier(head) if self.multilabel else head
        self.head_.fit(self._features(X), Y)

    def _scores(self, X: pd.DataFrame) -> np.ndarray:
        return self.head_.predict_proba(self._features(X))

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("cache_", None)
        state.pop("encoder_dir_", None)
        return state

    def save(self, folder: Path) -> None:
        """Pickle of the head, plus the encoder's weights and tokenizer, so the model is self-contained."""
        super().save(folder)
        self._cache().encoder.save(folder / "encoder")

    def _restore(self, folder: Path) -> None:
        self.encoder_dir_ = folder / "encoder"
        self.persist_embeddings_ = False
        self.cache_ = None

    def model_info(self) -> dict[str, float]:
        model = self._cache().encoder.model
        parameters = sum(p.numel() for p in model.parameters())
        return {"model_parameters": float(parameters), "model_size_mb": parameters * 4 / 2**20}
