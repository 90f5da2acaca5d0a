"""The MLflow pyfunc wrapper that every family is logged as, and loading models by reference."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import mlflow
import mlflow.pyfunc
import pandas as pd

from train.errors import TaggerError
from train.models.base import TextClassifier

ARTIFACT_KEY = "classifier"


class TaggerModel(mlflow.pyfunc.PythonModel):
    """Input: a DataFrame with ``text`` (and ``target`` for stance). Output, one row per sentence:
    ``labels`` (multi-label: the chosen labels) or ``label`` (multi-class), and ``score_<label>``."""

    def __init__(self, classifier: TextClassifier | None = None):
        self.classifier = classifier

    def load_context(self, context) -> None:
        self.classifier = TextClassifier.load(Path(context.artifacts[ARTIFACT_KEY]))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return predict_frame(self.classifier, model_input)


def predict_frame(classifier: TextClassifier, inputs: pd.DataFrame) -> pd.DataFrame:
    """Tag a DataFrame of sentences; the column layout of every tagger model's output."""
    inputs = pd.DataFrame(inputs)
    if "target" not in inputs.columns:
        inputs["target"] = ""
    proba = classifier.predict_proba(inputs)
    decided = classifier.decide(proba)
    out = pd.DataFrame({"labels" if classifier.multilabel else "label": decided})
    for j, label in enumerate(classifier.labels):
        out[f"score_{label}"] = proba[:, j]
    return out


def model_uri(reference: str) -> str:
    """A run id, ``runs:/``/``models:/`` URI or local folder → an MLflow model URI.

    A logged model is a pickle: loading it runs its code. So models come only from the configured
    tracking store (run ids, ``runs:/``, ``models:/``) or from a local folder the user names; other
    URIs (``http://``, ``s3://``, ...) are refused.
    """
    if reference.startswith(("runs:/", "models:/")):
        return reference
    if "://" in reference:
        raise TaggerError(
            f"model '{reference}': only run ids, runs:/ or models:/ URIs (from the configured tracking store) "
            "or a local model folder are accepted"
        )
    path = Path(reference)
    if path.exists():
        if not (path / "MLmodel").exists():
            raise TaggerError(f"{path}: not an MLflow model folder (no MLmodel file)")
        return str(path.resolve())
    if len(reference) == 32 and all(c in "0123456789abcdef" for c in reference):
        return f"runs:/{reference}/model"
    raise TaggerError(f"model '{reference}': not a run id, models:/ or runs:/ URI, or a model folder")


_LOAD_LOCK = threading.Lock()


def load_pyfunc(uri: str):
    """``mlflow.pyfunc.load_model`` without its lasting side effect on ``sys.path``.

    MLflow prepends each model's ``code/`` folder to ``sys.path`` and never removes it, so every
    reload of a server grew it. The package is already imported, so the path is restored after the load
    (under a lock: ``sys.path`` is process-wide).
    """
    with _LOAD_LOCK:
        saved = list(sys.path)
        try:
            return mlflow.pyfunc.load_model(uri)
        finally:
            sys.path[:] = saved


def load_classifier(reference: str, backend: str | None = None) -> TextClassifier:
    """Load the tagger classifier behind a model reference, optionally choosing its backend."""
    uri = model_uri(reference)
    try:
        loaded = load_pyfunc(uri)
    except Exception as exc:  # MLflow raises several types for a bad reference
        raise TaggerError(f"model '{reference}': cannot load ({type(exc).__name__}: {exc})") from None
    wrapper = loaded.unwrap_python_model()
    if not isinstance(getattr(wrapper, "classifier", None), TextClassifier):
        raise TaggerError(f"model '{reference}': not a tagger model")
    if backend:
        try:
            wrapper.classifier.set_backend(backend)
        except ValueError as exc:
            raise TaggerError(f"--backend: {exc}") from None
    return wrapper.classifier
