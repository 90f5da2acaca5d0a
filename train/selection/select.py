"""``tagger select``: read a pool of unlabelled sentences, score it with a model, choose, and write the batch."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from train.data.loading import read_table
from train.data.sentences import is_blank
from train.errors import TaggerError
from train.selection.strategies import choose, multiclass_uncertainty, multilabel_uncertainty

log = logging.getLogger("tagger")

MAX_TEXT_CHARS = 10_000  # as data.max_text_chars: a pool row is one sentence
LABEL_FIELDS = ("topics", "stance")  # what a suggestion fills; the pool's own values there are dropped
SCORE_DECIMALS = 4


@dataclass
class Pool:
    """A checked pool: one record per distinct sentence (id, doc_id, text, target, other scalar columns)."""

    path: Path
    records: list[dict]
    lines: list[int]

    @property
    def texts(self) -> list[str]:
        return [r["text"] for r in self.records]

    @property
    def groups(self) -> list[str | None]:
        return [r.get("doc_id") for r in self.records]


def text_key(text: str) -> str:
    """Sentences that differ only in spacing or case are the same sentence to label."""
    return " ".join(text.split()).casefold()


def _scalar(value) -> object:
    """A pool value as JSON: scalars kept, missing values dropped (None), anything else as a list or text."""
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return None
    if isinstance(value, pd.Timestamp):  # an ISO date column is read as timestamps: give back the date
        midnight = value.tz is None and value == value.normalize()
        return value.date().isoformat() if midnight else value.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, str | int | float | bool):
        return value
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def read_pool(path: Path, default_target: str, group_column: str = "doc_id", exclude: tuple[Path, ...] = ()) -> Pool:
    """Read and check the pool (JSONL, CSV, TSV or Parquet): ``text`` needed; ``id``, ``target`` and the
    article column optional. Repeats (same sentence and target), and rows in the ``exclude`` files (by id, or by
    sentence and target; by sentence alone where an exclude file has no target), are dropped."""
    frame, lines = read_table(path)
    unit = "row" if path.suffix.lower() == ".parquet" else "line"
    if "text" not in frame.columns:
        raise TaggerError(f"{path}: missing column 'text' (the sentences to choose from)")
    if group_column not in frame.columns:
        log.info("pool %s: no '%s' column, so no cap per article", path, group_column)
    taken_ids, taken_texts = _excluded(exclude)
    records, kept_lines, seen_ids, seen_texts = [], [], {}, set()
    duplicates = excluded = 0
    for i, row in enumerate(frame.to_dict(orient="records")):
        where = f"{path} {unit} {lines[i]}"
        text = row.get("text")
        if not isinstance(text, str) or is_blank(text):
            raise TaggerError(f"{where}: empty or missing text in column 'text'")
        if len(text) > MAX_TEXT_CHARS:
            raise TaggerError(f"{where}: text has {len(text)} characters, over the limit of {MAX_TEXT_CHARS}")
        raw_id = _scalar(row.get("id"))
        record_id = str(raw_id) if raw_id is not None and str(raw_id).strip() else f"{path.stem}-{lines[i]}"
        if record_id in seen_ids:
            raise TaggerError(f"{where}: duplicate id '{record_id}' (first at {unit} {seen_ids[record_id]})")
        seen_ids[record_id] = lines[i]
        target = row.get("target")
        target = target.strip() if isinstance(target, str) and target.strip() else default_target
        key = (text_key(text), target)
        if record_id in taken_ids or key in taken_texts or (key[0], None) in taken_texts:
            excluded += 1
            continue
        if key in seen_texts:
            duplicates += 1
            continue
        seen_texts.add(key)
        group = _scalar(row.get(group_column))
        record = {"id": record_id, "doc_id": None if group is None else str(group), "text": text, "target": target}
        for name, value in row.items():
            if name not in record and name not in LABEL_FIELDS and name not in (group_column, "suggested", "selection"):
                if (value := _scalar(value)) is not None:
                    record[name] = value
        records.append(record)
        kept_lines.append(lines[i])
    if duplicates or excluded:
        log.info("pool %s: skipped %d repeated sentences and %d already labelled", path, duplicates, excluded)
    if not records:
        raise TaggerError(f"{path}: no sentences left to choose from (all are repeats or in --exclude)")
    return Pool(path, records, kept_lines)


def _excluded(paths: tuple[Path, ...]) -> tuple[set[str], set[tuple[str, str | None]]]:
    """Ids and (sentence, target) keys of files already labelled (or chosen in an earlier round); the
    target is None for a file without a target column."""
    ids, texts = set(), set()
    for path in paths:
        try:
            frame, _ = read_table(path)
        except TaggerError as exc:
            raise TaggerError(f"--exclude {exc}") from None
        if "text" not in frame.columns:
            raise TaggerError(f"--exclude {path}: missing column 'text'")
        if "id" in frame.columns:
            ids.update(str(v) for v in frame["id"] if _scalar(v) is not None)
        targets = frame["target"] if "target" in frame.columns else [None] * len(frame)
        for text, target in zip(frame["text"], targets, strict=True):
            if isinstance(text, str):
                texts.add((text_key(text), target.strip() if isinstance(target, str) and target.strip() else None))
    return ids, texts


@dataclass
class Scored:
    """A model's suggestions and uncertainty for each pool sentence."""

    suggestions: list[dict]  # per sentence: topics and/or stance, and their scores
    uncertainty: np.ndarray  # 0 (sure) .. 1 (on the decision boundary); the combined model: the larger of both


def classifier_uncertainty(classifier, proba: np.ndarray) -> np.ndarray:
    """Uncertainty of one classifier's scores under its tuned decision (thresholds or class offsets)."""
    if classifier.multilabel:
        return multilabel_uncertainty(proba, getattr(classifier, "thresholds_", None))
    return multiclass_uncertainty(proba, classifier.offsets_)


def _rounded(labels: list[str], row: np.ndarray) -> dict[str, float]:
    return {label: round(float(v), SCORE_DECIMALS) for label, v in zip(labels, row, strict=True)}


def score_pool(model: str, pool: Pool, backend: str | None = None, force_backend: bool = False) -> Scored:
    """Score the pool with a one-task classifier (topic or stance) or the combined topic + stance model."""
    from train.outputs import model_inputs
    from train.tracking.packaging import TaggerBundle, load_wrapper, set_backend

    wrapper = load_wrapper(model)
    classifiers = [wrapper.topic, wrapper.stance] if isinstance(wrapper, TaggerBundle) else [wrapper.classifier]
    set_backend(classifiers, backend, force_backend)
    frame = model_inputs(pd.DataFrame({"text": pool.texts, "target": [r["target"] for r in pool.records]}))
    suggestions: list[dict] = [{} for _ in pool.records]
    uncertainties = []
    for classifier in classifiers:
        proba = classifier.predict_proba(frame)
        uncertainties.append(classifier_uncertainty(classifier, proba))
        field = "topics" if classifier.multilabel else "stance"
        for suggestion, decided, row in zip(suggestions, classifier.decide(proba), proba, strict=True):
            suggestion[field] = decided
            suggestion["topic_scores" if classifier.multilabel else "stance_scores"] = _rounded(classifier.labels, row)
    return Scored(suggestions, np.max(uncertainties, axis=0))


@dataclass
class Selection:
    """The chosen sentences, in the order chosen, as records in the project's schema with suggestions."""

    rows: list[dict]
    model: str
    strategy: str
    pool_size: int
    pool_uncertainty: float


def select(
    model: str,
    pool_path: Path,
    n: int,
    strategy: str = "mixed",
    seed: int = 13,
    per_article: int = 3,
    default_target: str | None = None,
    group_column: str = "doc_id",
    exclude: tuple[Path, ...] = (),
    backend: str | None = None,
    force_backend: bool = False,
) -> Selection:
    """Choose up to ``n`` pool sentences worth labelling next with ``strategy``, at most ``per_article`` per article
    (0: no cap), each with the model's labels filled in as suggestions."""
    from train.domain import DEFAULT_TARGET
    from train.tracking.packaging import model_uri

    model_uri(model)  # a malformed or refused reference fails before the pool is read
    pool = read_pool(Path(pool_path), default_target or DEFAULT_TARGET, group_column, tuple(map(Path, exclude)))
    scored = score_pool(model, pool, backend, force_backend)
    picks = choose(strategy, n, scored.uncertainty, pool.texts, pool.groups, per_article, seed)
    rows = []
    for rank, (i, score) in enumerate(picks, start=1):
        suggestion = scored.suggestions[i]
        row = {**pool.records[i], **{f: suggestion[f] for f in LABEL_FIELDS if f in suggestion}, "suggested": True}
        row["selection"] = {
            "strategy": strategy,
            "rank": rank,
            "score": None if score is None else round(score, SCORE_DECIMALS),
            "uncertainty": round(float(scored.uncertainty[i]), SCORE_DECIMALS),
            "model": model,
            "seed": seed,
            **{k: v for k, v in suggestion.items() if k.endswith("_scores")},
        }
        rows.append(row)
    if len(rows) < n:
        log.warning(
            "chose %d sentences, not %d: the pool has no more within --per-article %d", len(rows), n, per_article
        )
    return Selection(rows, model, strategy, len(pool.records), float(scored.uncertainty.mean()))


def selection_jsonl(selection: Selection) -> str:
    """The chosen sentences as JSON Lines (the project's schema, ``suggested`` true, a ``selection`` object)."""
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in selection.rows)
