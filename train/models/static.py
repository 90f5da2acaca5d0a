"""``static_logreg`` family: static token embeddings distilled from a sentence encoder + a linear head.

For bulk tagging. ``model2vec`` distils the encoder (all-MiniLM-L6-v2 by default, offline from the
installed package) into one vector per vocabulary token: each token is passed through the encoder
alone, the outputs are reduced by PCA and weighted by token frequency (SIF). A sentence's vector is
then the mean of its tokens' vectors: no encoder pass at tagging time, so tens of thousands of
sentences a second on two cores. A logistic-regression head is fitted on the vectors; for stance
the target's vector and the element-wise product are concatenated, as in ``embedding_logreg``.

The distilled model is made once per encoder and setting and cached on disk (``cache_dir``), and
saved inside each trained model, which is therefore self-contained.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from itertools import chain
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from train.models.catalog import STATIC_LOGREG
from train.models.encoder import model_key, resolve_encoder, set_threads
from train.models.vector_head import SentenceVectorLogReg
from train.registry import register_family

log = logging.getLogger("tagger")


def distilled_model(reference: str, pca_dims: int | None, cache: Path):
    """The ``model2vec`` static model distilled from ``reference``, made once and cached under ``cache``.

    Concurrent trainings may distil at the same time: each writes a folder of its own and renames it
    into place; the first rename wins and the others use it.
    """
    import model2vec
    from model2vec import StaticModel

    folder = cache / f"{model_key(reference)}-pca{pca_dims or 'none'}-m2v{model2vec.__version__}"
    if not (folder / "config.json").exists():
        from model2vec.distill import distill

        log.info("distilling static embeddings from %s (once per encoder; about 20 s on 2 cores) ...", reference)
        started = time.perf_counter()
        model = distill(model_name=reference, pca_dims=pca_dims, device="cpu")
        cache.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".static-", dir=cache))
        model.save_pretrained(str(staging))
        try:
            staging.rename(folder)
        except OSError:  # another process put it there first
            shutil.rmtree(staging, ignore_errors=True)
        log.info("distilling static embeddings done (%.1fs)", time.perf_counter() - started)
    return StaticModel.from_pretrained(str(folder))


class StaticEncoder:
    """Mean-pooled static token vectors, as ``StaticModel.encode`` computes them, at bulk speed.

    The fast tokenizer runs on as many threads as this process may use (it releases the GIL), and
    pooling is one sparse product (sentences × tokens, weights 1/length) with the float32 vectors.
    """

    parallel_from = 256  # sentences; fewer are tokenised on the calling thread

    def __init__(self, static, max_length: int | None):
        self.tokenizer = static.tokenizer
        self.vectors = np.asarray(static.embedding, dtype=np.float32)
        self.unk = static.unk_token_id
        self.normalize = bool(static.normalize)
        self.max_length = max_length
        self.threads = max(1, len(os.sched_getaffinity(0)))  # the CPUs this process may run on
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0
        self._pool_lock = threading.Lock()  # serving threads share one encoder

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None or self._pool_pid != os.getpid():  # a forked child has no pool threads
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="tagger-static")
                self._pool_pid = os.getpid()
            return self._pool

    def _ids(self, texts: list[str]) -> list[list[int]]:
        def tokenize(part: list[str]) -> list[list[int]]:
            return [e.ids for e in self.tokenizer.encode_batch_fast(part, add_special_tokens=False)]

        if self.threads == 1 or len(texts) < self.parallel_from:
            return tokenize(texts)
        step = -(-len(texts) // self.threads)
        parts = self._executor().map(tokenize, [texts[i : i + step] for i in range(0, len(texts), step)])
        return [ids for part in parts for ids in part]

    def encode(self, texts: list[str]) -> np.ndarray:
        n = len(texts)
        ids = self._ids(texts)
        if self.max_length is not None:
            ids = [row[: self.max_length] for row in ids]
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=n)
        flat = np.fromiter(chain.from_iterable(ids), dtype=np.int64, count=int(lengths.sum()))
        rows = np.repeat(np.arange(n), lengths)
        keep = flat != self.unk if self.unk is not None else np.ones(len(flat), dtype=bool)
        counts = np.bincount(rows[keep], minlength=n)
        weights = keep / np.maximum(counts, 1)[rows]
        pooling = sp.csr_matrix((weights.astype(np.float32), (rows, flat)), shape=(n, len(self.vectors)))
        out = np.asarray(pooling @ self.vectors, dtype=np.float32)
        if self.normalize:
            out /= np.linalg.norm(out, axis=1, keepdims=True) + 1e-32
        return out

    def __getstate__(self):  # never pickled with a model; a thread pool cannot be
        raise TypeError("StaticEncoder is rebuilt from the saved static model, not pickled")


@register_family(STATIC_LOGREG)
class StaticLogReg(SentenceVectorLogReg):
    """Logistic regression on mean-pooled static token embeddings (model2vec)."""

    requirements = ("model2vec",)

    def _static(self):
        if getattr(self, "static_", None) is None:
            p = self.params
            set_threads(p["torch_threads"])
            self.static_ = distilled_model(
                resolve_encoder(p["name_or_path"]), p["pca_dims"], self._cache_folder("static")
            )
        return self.static_

    def _encode(self, texts: list[str]) -> np.ndarray:
        if getattr(self, "encoder_", None) is None:
            self.encoder_ = StaticEncoder(self._static(), self.params["max_length"])
        return self.encoder_.encode(texts)

    def _save_weights(self, folder: Path) -> None:
        """The head, plus the static model (safetensors vectors and tokenizer), so the model is self-contained."""
        super()._save_weights(folder)
        self._static().save_pretrained(str(folder / "static"))

    def _load_weights(self, folder: Path) -> None:
        super()._load_weights(folder)
        self._use_saved_static(folder)

    def _use_saved_static(self, folder: Path) -> None:
        """Encode with the static model saved in ``folder``."""
        from model2vec import StaticModel

        self.static_ = StaticModel.from_pretrained(str(folder / "static"))
        self.encoder_ = StaticEncoder(self.static_, self.params["max_length"])  # made once, before serving threads

    def model_info(self) -> dict[str, float]:
        embedding = np.asarray(self._static().embedding)
        return {"model_parameters": float(embedding.size), "model_size_mb": embedding.nbytes / 2**20}
