"""Tag whole texts: split into sentences, then topics and stance for each, with the models' versions."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from train.data.sentences import split_text
from train.domain import champion_uri
from train.errors import TaggerError
from train.models.base import TextClassifier
from train.models.explain import Budget, explain
from train.outputs import score_pair, tag_records
from train.tracking.packaging import load_classifier, model_uri, set_backend

if TYPE_CHECKING:
    from train.serving.drift import Drift

log = logging.getLogger("tagger")


def _version_of(uri: str) -> str:
    """A readable version label: ``tagger-topic v3`` for registry URIs, else the URI itself."""
    if uri.startswith("models:/") and "@" in uri:
        import mlflow

        name, alias = uri.removeprefix("models:/").split("@", 1)
        try:
            version = mlflow.MlflowClient().get_model_version_by_alias(name, alias)
            return f"{name} v{version.version} (@{alias}, run {version.run_id})"
        except Exception:  # noqa: BLE001 - the label is informative only
            return uri
    return uri


@dataclass
class Tagger:
    """A topic model and a stance model, used together on sentences."""

    topic: TextClassifier
    stance: TextClassifier
    versions: dict[str, str] = field(default_factory=dict)
    drift: Drift | None = None  # watches the label mix of what is tagged (set by the service, train.serving.drift)

    @classmethod
    def load(
        cls,
        topic_uri: str | None = None,
        stance_uri: str | None = None,
        backend: str | None = None,
        force_backend: bool = False,
    ) -> Tagger:
        """Load the given models, or the registered champions; clear errors when missing.

        ``backend`` (e.g. ``onnx-int8``) applies to the models whose family has it; naming one that
        neither model has is an error, and so is one that fell below parity with torch when the model
        was trained (unless ``force_backend``). ``auto``: each model's fastest backend holding parity.
        """
        from train.tracking import store

        store.setup()
        uris = {"topic": topic_uri or champion_uri("topic"), "stance": stance_uri or champion_uri("stance")}
        for task, uri in uris.items():  # a mistyped reference is reported before anything is loaded
            try:
                model_uri(uri)
            except TaggerError as exc:
                raise TaggerError(f"{task} model: {exc}") from None
        models = {}
        for task, uri in uris.items():
            try:
                models[task] = load_classifier(uri)
            except TaggerError as exc:
                hint = f"; run 'tagger promote --task {task}' first" if uri == champion_uri(task) else ""
                raise TaggerError(f"{task} model: {exc}{hint}") from None
        set_backend(list(models.values()), backend, force_backend)
        for task, model in models.items():
            if len(model.backends) > 1:
                log.info("%s model: %s backend", task, getattr(model, "backend", model.backends[0]))
        if not models["topic"].multilabel or models["stance"].multilabel:
            raise TaggerError("the topic model must be multi-label and the stance model multi-class")
        return cls(models["topic"], models["stance"], {task: _version_of(uri) for task, uri in uris.items()})

    def tag_sentences(self, sentences: list[dict], target: str | None) -> list[dict]:
        """``sentences``: dicts with ``text`` (optional ``start``/``end``, and a ``target`` that overrides
        ``target``); returns one result each, in order, with its ``index``."""
        if not sentences:
            return []
        frame = pd.DataFrame(
            {"text": [s["text"] for s in sentences], "target": [s.get("target") or target for s in sentences]}
        )
        topic_proba, stance_proba = score_pair(self.topic, self.stance, frame)
        if self.drift is not None:  # the window takes the raw scores; with live priors, the decision adjusted ones
            scores = self.drift.observe({"topic": topic_proba, "stance": stance_proba})
            topic_proba, stance_proba = scores["topic"], scores["stance"]
        records = tag_records(self.topic, self.stance, topic_proba, stance_proba)
        return [
            {"index": i, "text": s["text"], "start": s.get("start"), "end": s.get("end"), **record}
            for i, (s, record) in enumerate(zip(sentences, records, strict=True))
        ]

    def tag_text(self, text: str, target: str) -> list[dict]:
        return self.tag_sentences(sentence_dicts(text), target)

    def explain_sentences(
        self,
        sentences: list[dict],
        target: str | None,
        top_k: int = 5,
        stance: str | list[list[str]] = "decided",
        budget: Budget | None = None,
    ) -> list[dict]:
        """``{"topic": ..., "stance": ...}`` per sentence: the words behind every topic's score, and behind
        the stance classes ``stance`` names per sentence (``"decided"``: the predicted class; ``"all"``).
        ``sentences`` may be ``tag_sentences``' results: their scores are then reported, not computed again."""
        if not sentences:
            return []
        frame = pd.DataFrame(
            {"text": [s["text"] for s in sentences], "target": [s.get("target") or target for s in sentences]}
        )
        topics = explain(self.topic, frame, top_k, "all", budget, _scores(sentences, "topic", self.topic.labels))
        stances = explain(self.stance, frame, top_k, stance, budget, _scores(sentences, "stance", self.stance.labels))
        return [{"topic": t, "stance": s} for t, s in zip(topics, stances, strict=True)]

    def warm_up(self) -> None:
        """One tagging call, so that lazily built parts (fast scorers, sessions) exist before traffic."""
        tagged = self.tag_text("Warm-up sentence about a gas deal. Another one about troops.", "closer A–B ties")
        self.explain_sentences(tagged[:1], "closer A–B ties", 1)  # and the explainers' speed estimates


def _scores(sentences: list[dict], task: str, labels: list[str]) -> np.ndarray | None:
    """The ``<task>_scores`` that tagged sentences carry, as an array in ``labels`` order (None if untagged)."""
    if not all(f"{task}_scores" in s for s in sentences):
        return None
    return np.array([[s[f"{task}_scores"][label] for label in labels] for s in sentences], dtype=float)


SPLIT_BLOCK_CHARS = 16_000  # text is split in line-aligned blocks of about this size


def sentence_dicts(text: str, deadline: float | None = None, limit: int | None = None) -> list[dict]:
    """Split ``text`` into the ``{"text", "start", "end"}`` dicts that ``Tagger.tag_sentences`` takes.

    ``deadline`` (a ``time.monotonic()`` value) stops the work with ``DeadlineExceeded``. With ``limit``,
    splitting stops once more than ``limit`` sentences are found (the caller refuses the text), so the
    work is bounded by the limit, not by the text's size: the text is split in blocks that end at a
    newline, which gives the same sentences since splitting never crosses a line.
    """
    result: list[dict] = []
    start = 0
    while start < len(text):
        cut = text.find("\n", start + SPLIT_BLOCK_CHARS)
        end = len(text) if cut < 0 else cut + 1
        sentences, _ = split_text(text[start:end], "input", deadline=deadline)
        result.extend({"text": s.text, "start": start + s.start, "end": start + s.end} for s in sentences)
        if limit is not None and len(result) > limit:
            break
        start = end
    return result
