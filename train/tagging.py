"""Tag whole texts: split into sentences, then topics and stance for each, with the models' versions."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import mlflow.pyfunc
import pandas as pd

from train.errors import TaggerError
from train.models.base import TextClassifier
from train.pyfunc import load_classifier, model_uri
from train.sentences import split_text

DEFAULT_TARGET = "closer Iran–Iraq ties"


def champion_uri(task: str) -> str:
    return f"models:/tagger-{task}@champion"


def _version_of(uri: str) -> str:
    """A readable version label: ``tagger-topic v3`` for registry URIs, else the URI itself."""
    if uri.startswith("models:/") and "@" in uri:
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

    @classmethod
    def load(cls, topic_uri: str | None = None, stance_uri: str | None = None, backend: str | None = None) -> Tagger:
        """Load the given models, or the registered champions; clear errors when missing.

        ``backend`` (e.g. ``onnx-int8``) applies to the models whose family has it; naming one that
        neither model has is an error.
        """
        from train import tracking

        tracking.setup()
        topic_uri = topic_uri or champion_uri("topic")
        stance_uri = stance_uri or champion_uri("stance")
        uris = {"topic": topic_uri, "stance": stance_uri}
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
        if backend:
            chosen = [m for m in models.values() if backend in m.backends]
            if not chosen:
                families = ", ".join(f"{t}: {type(m).__name__} ({'/'.join(m.backends)})" for t, m in models.items())
                raise TaggerError(f"--backend {backend}: neither model has it ({families})")
            for model in chosen:
                model.set_backend(backend)
        if not models["topic"].multilabel or models["stance"].multilabel:
            raise TaggerError("the topic model must be multi-label and the stance model multi-class")
        return cls(
            models["topic"], models["stance"], {"topic": _version_of(topic_uri), "stance": _version_of(stance_uri)}
        )

    def tag_sentences(self, sentences: list[dict], target: str | None) -> list[dict]:
        """``sentences``: dicts with ``text`` (optional ``start``/``end``, and a ``target`` that overrides
        ``target``); returns one result each."""
        if not sentences:
            return []
        frame = pd.DataFrame(
            {"text": [s["text"] for s in sentences], "target": [s.get("target") or target for s in sentences]}
        )
        topic_scores = self.topic.predict_proba(frame)
        stance_scores = self.stance.predict_proba(frame)
        topics = self.topic.decide(topic_scores)
        stances = self.stance.decide(stance_scores)
        results = []
        for i, sentence in enumerate(sentences):
            results.append(
                {
                    "index": i,
                    "text": sentence["text"],
                    "start": sentence.get("start"),
                    "end": sentence.get("end"),
                    "topics": topics[i],
                    "topic_scores": {
                        k: round(float(v), 4) for k, v in zip(self.topic.labels, topic_scores[i], strict=True)
                    },
                    "stance": stances[i],
                    "stance_scores": {
                        k: round(float(v), 4) for k, v in zip(self.stance.labels, stance_scores[i], strict=True)
                    },
                }
            )
        return results

    def tag_text(self, text: str, target: str) -> list[dict]:
        return self.tag_sentences(sentence_dicts(text), target)


def sentence_dicts(text: str, deadline: float | None = None) -> list[dict]:
    """Split ``text`` into the ``{"text", "start", "end"}`` dicts that ``Tagger.tag_sentences`` takes.

    ``deadline`` (a ``time.monotonic()`` value) stops the work with ``DeadlineExceeded``.
    """
    sentences, _ = split_text(text, "input", deadline=deadline)
    return [{"text": s.text, "start": s.start, "end": s.end} for s in sentences]


class TaggerBundle(mlflow.pyfunc.PythonModel):
    """Topic + stance in one pyfunc (registered as ``tagger``), e.g. for ``mlflow models serve`` or Spark.

    Input: a DataFrame with ``text`` and optional ``target`` (default "closer Iran–Iraq ties").
    Output: ``topics`` (list), ``stance``, and ``topic_score_<label>`` / ``stance_score_<label>``.
    """

    def load_context(self, context) -> None:
        self.topic = TextClassifier.load(Path(context.artifacts["topic"]))
        self.stance = TextClassifier.load(Path(context.artifacts["stance"]))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        frame = pd.DataFrame(model_input).copy()
        if "target" not in frame.columns:
            frame["target"] = DEFAULT_TARGET
        frame["target"] = frame["target"].fillna(DEFAULT_TARGET)
        topic_scores = self.topic.predict_proba(frame)
        stance_scores = self.stance.predict_proba(frame)
        out = pd.DataFrame({"topics": self.topic.decide(topic_scores), "stance": self.stance.decide(stance_scores)})
        for j, label in enumerate(self.topic.labels):
            out[f"topic_score_{label}"] = topic_scores[:, j]
        for j, label in enumerate(self.stance.labels):
            out[f"stance_score_{label}"] = stance_scores[:, j]
        return out
