"""Scores → what users get: one function per output shape, shared by the CLI, the service and the pyfunc models.

A classifier's scores come out as a DataFrame (``classifier_frame``: MLflow pyfunc of one task) or as
JSON records (``classifier_records``: ``tagger predict``). Topic and stance scores together come out
as JSON records (``tag_records``: ``tagger tag``, ``/v1/tag``, ``tagger predict`` of the combined
model) or as a DataFrame (``tag_frame``: the combined pyfunc ``tagger``, e.g. ``mlflow models serve``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from train.domain import LABEL_COLUMNS, TARGET_COLUMN, TEXT_COLUMN
from train.models.base import TextClassifier

SCORE_DECIMALS = 4  # JSON scores are rounded; DataFrame scores are kept as computed


def model_inputs(inputs: pd.DataFrame, default_target: str | None = "") -> pd.DataFrame:
    """A copy of ``inputs`` with ``text`` and a ``target`` filled with ``default_target`` where missing."""
    frame = pd.DataFrame(inputs).copy()
    if TEXT_COLUMN not in frame.columns:
        raise ValueError(f"input needs a '{TEXT_COLUMN}' column (got {', '.join(map(str, frame.columns))})")
    if TARGET_COLUMN not in frame.columns:
        frame[TARGET_COLUMN] = default_target
    frame[TARGET_COLUMN] = frame[TARGET_COLUMN].fillna(default_target)
    return frame


def _key(classifier: TextClassifier) -> str:
    """The output column of a classifier's decision: ``topics`` (multi-label) or ``stance`` (multi-class),
    the names the combined model, ``tagger tag``, the HTTP service and the data files use (older taggers'
    one-task models wrote ``labels``/``label``)."""
    return LABEL_COLUMNS["multilabel" if classifier.multilabel else "multiclass"]


def _rounded(labels: list[str], row: np.ndarray) -> dict[str, float]:
    return {label: round(float(value), SCORE_DECIMALS) for label, value in zip(labels, row, strict=True)}


def classifier_frame(classifier: TextClassifier, proba: np.ndarray) -> pd.DataFrame:
    """``topics`` (multi-label) or ``stance`` (multi-class), then ``score_<label>`` per label."""
    out = pd.DataFrame({_key(classifier): classifier.decide(proba)})
    for j, label in enumerate(classifier.labels):
        out[f"score_{label}"] = proba[:, j]
    return out


def classifier_records(classifier: TextClassifier, proba: np.ndarray) -> list[dict]:
    """``{"topics"|"stance": ..., "scores": {label: score}}`` per sentence."""
    return [
        {_key(classifier): decided, "scores": _rounded(classifier.labels, row)}
        for decided, row in zip(classifier.decide(proba), proba, strict=True)
    ]


def tag_records(
    topic: TextClassifier, stance: TextClassifier, topic_proba: np.ndarray, stance_proba: np.ndarray
) -> list[dict]:
    """``topics``, ``topic_scores``, ``stance``, ``stance_scores`` per sentence."""
    return [
        {
            "topics": topics,
            "topic_scores": _rounded(topic.labels, topic_row),
            "stance": label,
            "stance_scores": _rounded(stance.labels, stance_row),
        }
        for topics, topic_row, label, stance_row in zip(
            topic.decide(topic_proba), topic_proba, stance.decide(stance_proba), stance_proba, strict=True
        )
    ]


def tag_frame(
    topic: TextClassifier, stance: TextClassifier, topic_proba: np.ndarray, stance_proba: np.ndarray
) -> pd.DataFrame:
    """``topics`` (list), ``stance``, then ``topic_score_<label>`` and ``stance_score_<label>``."""
    out = pd.DataFrame({"topics": topic.decide(topic_proba), "stance": stance.decide(stance_proba)})
    for j, label in enumerate(topic.labels):
        out[f"topic_score_{label}"] = topic_proba[:, j]
    for j, label in enumerate(stance.labels):
        out[f"stance_score_{label}"] = stance_proba[:, j]
    return out


def score_pair(topic: TextClassifier, stance: TextClassifier, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Topic and stance scores of the same sentences."""
    return topic.predict_proba(frame), stance.predict_proba(frame)
