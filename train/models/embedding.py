"""``embedding_logreg`` family: frozen sentence embeddings + a scikit-learn logistic-regression head.

Embeddings are the mean-pooled, normalised outputs of the encoder (all-MiniLM-L6-v2 by default),
cached on disk by model and text hash, so a second run over the same data skips encoding. For
stance the target's embedding is concatenated to the sentence's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from train.models.catalog import EMBEDDING_LOGREG
from train.models.encoder import EmbeddingCache, SentenceEncoder, resolve_encoder, set_threads
from train.models.vector_head import SentenceVectorLogReg
from train.registry import register_family


@register_family(EMBEDDING_LOGREG)
class EmbeddingLogReg(SentenceVectorLogReg):
    """Logistic regression on frozen encoder embeddings."""

    requirements = ("torch", "transformers")

    def _cache(self) -> EmbeddingCache:
        if getattr(self, "cache_", None) is None:
            set_threads(self.params["torch_threads"])
            reference = getattr(self, "encoder_dir_", None) or resolve_encoder(self.params["name_or_path"])
            encoder = SentenceEncoder(str(reference), self.params["max_length"], self.params["batch_size"])
            folder = self._cache_folder("embeddings")
            # a loaded model (serving, evaluation) keeps a bounded cache in memory only: no files
            # derived from user text, no growth without bound
            persist = getattr(self, "persist_embeddings_", True)
            self.cache_ = EmbeddingCache(folder if persist else None, encoder)
        return self.cache_

    def _encode(self, texts: list[str]) -> np.ndarray:
        return self._cache().encode(texts)

    def _save_weights(self, folder: Path) -> None:
        """The head, plus the encoder's weights (safetensors) and tokenizer, so the model is self-contained."""
        super()._save_weights(folder)
        self._cache().encoder.save(folder / "encoder")

    def _load_weights(self, folder: Path) -> None:
        super()._load_weights(folder)
        self._use_saved_encoder(folder)

    def _use_saved_encoder(self, folder: Path) -> None:
        """Encode with the encoder saved in ``folder``, caching embeddings in memory only."""
        self.encoder_dir_ = folder / "encoder"
        self.persist_embeddings_ = False
        self.cache_ = None

    def model_info(self) -> dict[str, float]:
        model = self._cache().encoder.model
        parameters = sum(p.numel() for p in model.parameters())
        return {"model_parameters": float(parameters), "model_size_mb": parameters * 4 / 2**20}
