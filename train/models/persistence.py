"""Classifiers saved as data: a manifest (``family.json``) plus each family's weights in a native format.

``save_classifier`` writes the manifest (family name, format version, task, labels, seed, params, the
tuned decision, label priors, backend parity figures, small learned values and library versions)
after the family's ``_save_weights`` has written its weights: skops for scikit-learn objects (loaded
with the explicit ``TRUSTED_TYPES``), safetensors and ``config.json`` for torch models, model2vec's
and SetFit's own ``save_pretrained``, numpy ``.npz`` for arrays. ``load_classifier`` reads them back;
it never unpickles, and refuses an unknown family or a newer format version with one line.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from train.errors import TaggerError

FORMAT_VERSION = 1  # raise when a change means older code cannot read new folders
MANIFEST = "family.json"
STATE_ARRAYS = "state.npz"
INLINE_ARRAY = 256  # learned arrays up to this many values stay in the manifest; larger ones go to STATE_ARRAYS
DECISION = ("thresholds_", "offsets_", "priors_", "parity_")  # kept in the manifest under names of their own

# Types skops does not trust by default that the families' scikit-learn objects hold; anything else in
# a skops file is refused. Never ``trusted=True``, never the list a file itself reports.
TRUSTED_TYPES = [
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.multiclass._ConstantPredictor",
    "train.models.target_cross.TargetCrossedWords",
]

log = logging.getLogger("tagger")


class ModelFormatError(TaggerError):
    """A classifier folder this code cannot read: no manifest, an unknown family, a newer format."""


# --- scikit-learn objects ---------------------------------------------------------------------------
def _estimators(obj: Any, where: str, seen: set[int]) -> Iterator[tuple[str, Any]]:
    """Each scikit-learn (or tagger) object inside ``obj``, with a path naming where it sits."""
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, list | tuple):
        for i, item in enumerate(obj):
            yield from _estimators(item, f"{where}.{i}", seen)
    elif isinstance(obj, dict):
        for key, item in obj.items():
            yield from _estimators(item, f"{where}.{key}", seen)
    elif type(obj).__module__.startswith(("sklearn.", "train.")) and hasattr(obj, "__dict__"):
        yield where, obj
        for key, item in list(vars(obj).items()):
            if key not in ("vocabulary_", "stop_words_"):  # large term tables, no estimators inside
                yield from _estimators(item, f"{where}.{key}", seen)


def _vocabulary_file(path: Path) -> Path:
    return path.with_suffix(".vocabularies.npz")


def _save_vocabularies(vocabularies: dict[str, dict[str, int]], path: Path) -> None:
    """Term → column tables as arrays: UTF-8 bytes with offsets (exact for any text), and the columns.

    skops writes a dict entry by entry (seconds for a character n-gram vocabulary); arrays take milliseconds.
    """
    arrays = {"paths": np.array(list(vocabularies), dtype=str)}
    for i, vocabulary in enumerate(vocabularies.values()):
        encoded = [term.encode("utf-8", "surrogatepass") for term in vocabulary]
        arrays[f"bytes{i}"] = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        arrays[f"ends{i}"] = np.cumsum([len(e) for e in encoded], dtype=np.int64)
        arrays[f"columns{i}"] = np.fromiter(vocabulary.values(), dtype=np.int64, count=len(vocabulary))
    np.savez_compressed(path, **arrays)


def _load_vocabularies(path: Path) -> dict[str, dict[str, int]]:
    with np.load(path, allow_pickle=False) as arrays:
        vocabularies = {}
        for i, where in enumerate(arrays["paths"].tolist()):
            blob, ends = arrays[f"bytes{i}"].tobytes(), arrays[f"ends{i}"].tolist()
            starts = [0, *ends[:-1]]
            terms = [blob[a:b].decode("utf-8", "surrogatepass") for a, b in zip(starts, ends, strict=True)]
            vocabularies[where] = dict(zip(terms, arrays[f"columns{i}"].tolist(), strict=True))
    return vocabularies


def dump_sklearn(estimator: Any, path: Path) -> None:
    """Write a fitted scikit-learn object with skops, its vocabularies beside it as arrays.

    Metadata-routing requests that ``set_fit_request`` left are dropped (they only steer ``fit``, and
    each refers back to its estimator, a cycle skops cannot write), as is ``stop_words_``, which
    scikit-learn keeps for introspection only.
    """
    import zipfile

    import skops.io as sio

    found = list(_estimators(estimator, "", set()))
    vocabularies: dict[str, dict[str, int]] = {}
    for where, obj in found:
        obj.__dict__.pop("_metadata_request", None)
        obj.__dict__.pop("stop_words_", None)
        vocabulary = obj.__dict__.get("vocabulary_")
        if isinstance(vocabulary, dict) and vocabulary:
            vocabularies[where] = vocabulary
            obj.vocabulary_ = {}
    try:
        sio.dump(estimator, path, compression=zipfile.ZIP_DEFLATED)
    finally:
        for where, obj in found:
            if where in vocabularies:
                obj.vocabulary_ = vocabularies[where]
    if vocabularies:
        _save_vocabularies(vocabularies, _vocabulary_file(path))


def load_sklearn(path: Path) -> Any:
    """Read a skops file, trusting skops' defaults and ``TRUSTED_TYPES`` only."""
    import skops.io as sio
    from skops.io.exceptions import UntrustedTypesFoundException

    try:
        estimator = sio.load(path, trusted=TRUSTED_TYPES)
    except UntrustedTypesFoundException as exc:
        raise ModelFormatError(f"{path}: holds types that are not trusted; not loaded ({exc})") from None
    if _vocabulary_file(path).exists():
        vocabularies = _load_vocabularies(_vocabulary_file(path))
        for where, obj in _estimators(estimator, "", set()):
            if where in vocabularies:
                obj.vocabulary_ = vocabularies.pop(where)
        if vocabularies:
            raise ModelFormatError(f"{_vocabulary_file(path)}: vocabularies for objects {path} does not hold")
    return estimator


# --- learned state ------------------------------------------------------------------------------------
def _encode(value: Any, arrays: dict[str, np.ndarray], name: str) -> Any:
    """JSON for plain values; small arrays inline, large ones by key into ``arrays``."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            raise TypeError(f"{name}: arrays of {value.dtype} cannot be saved as data")
        if value.size <= INLINE_ARRAY:
            return {"__array__": value.tolist(), "dtype": str(value.dtype), "shape": list(value.shape)}
        key = f"a{len(arrays)}"
        arrays[key] = value
        return {"__npz__": key}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, arrays, name) for v in value]}
    if isinstance(value, list):
        return [_encode(v, arrays, name) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _encode(v, arrays, f"{name}[{k!r}]") for k, v in value.items()}
    raise TypeError(
        f"{name} is a {type(value).__name__}, which cannot be saved as data: write it in the family's "
        "_save_weights and leave it out of learned_state"
    )


def _decode(value: Any, arrays: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v, arrays) for v in value]
    if not isinstance(value, dict):
        return value
    if "__array__" in value:
        return np.asarray(value["__array__"], dtype=value["dtype"]).reshape(value["shape"])
    if "__npz__" in value:
        return arrays[value["__npz__"]]
    if "__tuple__" in value:
        return tuple(_decode(v, arrays) for v in value["__tuple__"])
    return {k: _decode(v, arrays) for k, v in value.items()}


def _floats(values: Any) -> list[float] | None:
    return None if values is None else [float(v) for v in np.asarray(values, dtype=float)]


def library_versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Versions of Python and the libraries that wrote a model (for the record; not checked on load)."""
    versions = {"python": sys.version.split()[0]}
    for name in ("tagger", "numpy", "scikit-learn", "skops", *extra):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


# --- save and load ------------------------------------------------------------------------------------
def manifest(model: Any) -> tuple[dict, dict[str, np.ndarray]]:
    """The manifest of a fitted classifier, and the learned arrays too large to keep in it."""
    from train.registry import family_name

    arrays: dict[str, np.ndarray] = {}
    name = family_name(type(model))
    decision = (
        {"thresholds": _floats(getattr(model, "thresholds_", None))}
        if model.multilabel
        else {"offsets": _floats(getattr(model, "offsets_", None))}
    )
    state = model.learned_state()
    data = {
        "format": "tagger-classifier",
        "format_version": FORMAT_VERSION,
        "family": name,
        "task_type": model.task_type,
        "labels": list(model.labels),
        "seed": model.seed,
        "params": json.loads(json.dumps(model.params)),  # validated config values: plain JSON
        "decision": decision,
        "priors": _floats(getattr(model, "priors_", None)),
        "parity": _encode(getattr(model, "parity_", None) or {}, arrays, "parity_"),
        **({"backend": model.backend} if isinstance(getattr(model, "backend", None), str) else {}),
        "state": {key: _encode(value, arrays, f"{name}.{key}") for key, value in state.items()},
        "versions": library_versions(tuple(model.requirements)),
    }
    return data, arrays


def save_classifier(model: Any, folder: Path) -> None:
    """Write ``model`` into ``folder``: its weights (``_save_weights``), then ``family.json``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data, arrays = manifest(model)
    model._save_weights(folder)
    if arrays:
        np.savez(folder / STATE_ARRAYS, **arrays)
    (folder / MANIFEST).write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def read_manifest(folder: Path) -> dict:
    """The manifest of a classifier folder; one line of error when there is none or it is not ours."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        if (Path(folder) / "classifier.joblib").is_file():
            raise ModelFormatError(
                f"{folder}: a pickled classifier from an older tagger; load its model folder, or convert it "
                "with 'tagger migrate'"
            )
        raise ModelFormatError(f"{folder}: not a saved classifier (no {MANIFEST})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelFormatError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != "tagger-classifier":
        raise ModelFormatError(f"{path}: not a tagger classifier manifest")
    version = data.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFormatError(
            f"{path}: model format version {version} is newer than this tagger reads ({FORMAT_VERSION}); "
            "upgrade tagger to load it"
        )
    return data


def load_classifier(folder: Path) -> Any:
    """Rebuild the classifier saved in ``folder`` from its manifest and weights (no pickle, no code run)."""
    from train.registry import get_family

    folder = Path(folder)
    data = read_manifest(folder)
    try:
        family = get_family(str(data["family"]))
    except ValueError as exc:
        raise ModelFormatError(f"{folder}: {str(exc).removeprefix('model.family: ')}") from None
    arrays: dict[str, np.ndarray] = {}
    if (folder / STATE_ARRAYS).is_file():
        with np.load(folder / STATE_ARRAYS, allow_pickle=False) as stored:  # read whole, then closed
            arrays = {key: stored[key] for key in stored.files}
    try:
        model = family(task_type=data["task_type"], labels=data["labels"], seed=data["seed"], **data["params"])
    except ValueError as exc:  # pydantic's ValidationError is one
        raise ModelFormatError(f"{folder}: the saved params do not fit family '{data['family']}' ({exc})") from None
    n = len(model.labels)
    decision = data.get("decision") or {}
    model.thresholds_ = np.asarray(decision.get("thresholds") or [0.5] * n, dtype=float)
    model.offsets_ = np.asarray(decision.get("offsets") or [0.0] * n, dtype=float)
    model.priors_ = None if data.get("priors") is None else np.asarray(data["priors"], dtype=float)
    model.parity_ = _decode(data.get("parity") or {}, arrays)
    if "backend" in data:
        model.backend = data["backend"]
    model.restore_state(_decode(data.get("state") or {}, arrays))
    model._load_weights(folder)
    return model
