"""Scores → what users get: one function per output shape, shared by the CLI, the service and the pyfunc models.

A classifier's scores come out as a DataFrame (``classifier_frame``: MLflow pyfunc of one task) or as
JSON records (``classifier_records``: ``tagger predict``). Topic and stance scores together come out
as JSON records (``tag_records``: ``tagger tag``, ``/v1/tag``, ``tagger predict`` of the combined
model) or as a DataFrame (``tag_frame``: the combined pyfunc ``tagger``, e.g. ``mlflow models serve``).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

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


def rounded_scores(labels: list[str], proba: np.ndarray) -> list[dict[str, float]]:
    """``{label: score}`` per row, scores rounded to ``SCORE_DECIMALS`` by numpy in one pass."""
    rounded = np.round(np.asarray(proba, dtype=float), SCORE_DECIMALS).tolist()
    if rounded and len(rounded[0]) != len(labels):
        raise ValueError(f"{len(rounded[0])} scores per row for {len(labels)} labels")
    return [dict(zip(labels, row, strict=False)) for row in rounded]  # lengths checked once, not per row


@contextmanager
def paused_gc() -> Iterator[None]:
    """Python's cyclic garbage collector off for a bulk pass (re-enabled after, if it was on).

    Building a dict per sentence makes the collector rescan every object made so far, again and
    again: about half the per-row cost of the JSON path, for no garbage (these objects hold no cycles).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def json_lines(rows: list[dict]) -> bytes:
    """``rows`` as JSON Lines (UTF-8, compact, one object a line), serialised by orjson in one pass."""
    import orjson

    dumps, newline = orjson.dumps, orjson.OPT_APPEND_NEWLINE | orjson.OPT_SERIALIZE_NUMPY
    return b"".join([dumps(row, option=newline) for row in rows])


def classifier_frame(classifier: TextClassifier, proba: np.ndarray) -> pd.DataFrame:
    """``topics`` (multi-label) or ``stance`` (multi-class), then ``score_<label>`` per label."""
    out = pd.DataFrame({_key(classifier): classifier.decide(proba)})
    for j, label in enumerate(classifier.labels):
        out[f"score_{label}"] = proba[:, j]
    return out


def classifier_records(classifier: TextClassifier, proba: np.ndarray) -> list[dict]:
    """``{"topics"|"stance": ..., "scores": {label: score}}`` per sentence."""
    key = _key(classifier)
    scores = rounded_scores(classifier.labels, proba)
    return [{key: decided, "scores": row} for decided, row in zip(classifier.decide(proba), scores, strict=True)]


def tag_records(
    topic: TextClassifier, stance: TextClassifier, topic_proba: np.ndarray, stance_proba: np.ndarray
) -> list[dict]:
    """``topics``, ``topic_scores``, ``stance``, ``stance_scores`` per sentence."""
    topic_scores, stance_scores = rounded_scores(topic.labels, topic_proba), rounded_scores(stance.labels, stance_proba)
    return [
        {"topics": topics, "topic_scores": topic_row, "stance": label, "stance_scores": stance_row}
        for topics, topic_row, label, stance_row in zip(
            topic.decide(topic_proba), topic_scores, stance.decide(stance_proba), stance_scores, strict=True
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
