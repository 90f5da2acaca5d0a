"""The domain in one place: label sets, the stance target, input/label columns and the MLflow naming rule."""

from __future__ import annotations

import re

TOPIC_LABELS = ["security", "energy", "trade", "diplomacy"]
STANCE_LABELS = ["favor", "against", "neutral"]
DEFAULT_TARGET = "closer Iran–Iraq ties"

TEXT_COLUMN, TARGET_COLUMN = "text", "target"  # what a model reads
LABEL_COLUMNS = {"multilabel": "topics", "multiclass": "stance"}  # gold labels in the project's data files

# "closer Iran–Iraq ties": a target names two actors
TARGET_PAIR = re.compile(r"^\s*closer\s+(?P<a>.+?)\s*[–—-]\s*(?P<b>.+?)\s+(ties|relations)\s*$", re.I)

CHAMPION, PREVIOUS = "champion", "previous"  # registry aliases: the served version and the one before
BUNDLE = "tagger"  # the registered topic + stance model
BUNDLE_EXPERIMENT = "tagger-bundle"  # where the runs that package the combined model live


def target_actors(target: str) -> list[str]:
    """The two actors named by a target such as "closer Iran–Iraq ties" (empty if not that form)."""
    match = TARGET_PAIR.match(target or "")
    return [match["a"], match["b"]] if match else []


def experiment_name(task: str) -> str:
    """The MLflow experiment of a task's runs: ``tagger-<task>``."""
    return f"tagger-{task}"


def registered_name(task: str) -> str:
    """The registered model of a task (``tagger-<task>``), or the combined model for ``tagger``."""
    return BUNDLE if task == BUNDLE else f"tagger-{task}"


def champion_uri(task: str) -> str:
    return f"models:/{registered_name(task)}@{CHAMPION}"
