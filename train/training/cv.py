"""Cross-validation of one config: a parent run, a nested run per fold, and a final model.

Steps: ``prepare`` (the same checks as ``tagger train``), folds that keep groups together and balance
every label (``data.folds``), one nested run per fold (fit on the other folds, score the held-out
one), per-label thresholds (multi-label) or class offsets (multi-class) tuned on the out-of-fold
scores of the *other* folds before a fold is scored, ``cv/<metric>_mean`` and ``_std`` on the parent,
then a final model refitted on all the data with a decision tuned on all out-of-fold scores, scored on
the evaluation sets and logged like any run, so ``tagger promote`` can pick a CV parent. ``plan_folds``,
``fit_fold``, ``score_folds`` and ``summarize`` are the same steps a sweep trial runs (``sweep``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from train.config import Config, dump_config
from train.data.folds import grouped_stratified_folds
from train.data.loading import LabelledData
from train.errors import TaggerError
from train.evaluation.evaluate import score_table
from train.evaluation.metrics import logged, logged_summary, multiclass_metrics, multilabel_metrics
from train.models.base import TextClassifier
from train.models.decision import apply_offsets, best_offsets, best_thresholds
from train.registry import build_model
from train.tracking.recorder import Recorder, Run
from train.training.pipeline import (
    check_trainable,
    config_params,
    dataset_frame,
    default_recorder,
    evaluate_all,
    finish_run,
    prepare,
    run_tags,
    seed_everything,
    step,
)

log = logging.getLogger("tagger")

CV_ROLE_TAG = "tagger.cv"  # "parent" on the CV run, "fold" on each nested run


def fold_assignments(config: Config, data: LabelledData, Y: np.ndarray, folds: int, repeats: int) -> list[np.ndarray]:
    """One fold id per sentence for each repeat; groups (``data.columns.group``) stay together."""
    groups = None
    if config.split.group_by_column and data.frame["group"].notna().all():
        groups = data.frame["group"].to_numpy()
    try:
        return [grouped_stratified_folds(Y, groups, folds, config.split.seed + r) for r in range(repeats)]
    except ValueError as exc:
        raise TaggerError(f"{data.path}: cannot make {folds} folds: {exc}") from None


@dataclass
class FoldPlan:
    """The data of one cross-validation and its folds, checked before any run exists."""

    data: LabelledData
    Y: np.ndarray  # indicators (multi-label) or class indices (multi-class)
    assignments: list[np.ndarray]  # one fold id per sentence, per repeat
    folds: int

    @property
    def repeats(self) -> int:
        return len(self.assignments)

    def held_out(self, r: int, k: int) -> np.ndarray:
        return self.assignments[r] == k


def plan_folds(config: Config, data: LabelledData, model: TextClassifier, folds: int, repeats: int) -> FoldPlan:
    """Make the folds and check that every fold's training part can be fitted (a user error otherwise)."""
    Y = model.encode(data.labels)
    onehot = Y if model.multilabel else np.eye(len(config.task.labels), dtype=int)[Y]
    assignments = fold_assignments(config, data, onehot, folds, repeats)
    for fold_ids in assignments:
        for k in range(folds):
            part = data.subset(fold_ids != k)
            check_trainable(config, part, model)
    return FoldPlan(data, Y, assignments, folds)


def fit_fold(config: Config, plan: FoldPlan, r: int, k: int) -> tuple[np.ndarray, float]:
    """Fit a fresh model on every fold of repeat ``r`` but ``k``; the held-out fold's scores and fit seconds."""
    X, y = plan.data.inputs, plan.data.labels
    held = plan.held_out(r, k)
    train_rows, held_rows = np.flatnonzero(~held), np.flatnonzero(held)
    model = build_model(config.model.family, config.task.type, config.task.labels, config.model.params, config.seed)
    start = time.perf_counter()
    weights = plan.data.sample_weights(config.data.weights)
    model.fit(
        X.iloc[train_rows],
        [y[i] for i in train_rows],
        X.iloc[held_rows],
        [y[i] for i in held_rows],
        sample_weight=None if weights is None else weights[train_rows],
    )
    seconds = time.perf_counter() - start
    return model.predict_proba(X.iloc[held_rows]), seconds


def held_out_scorer(config: Config, Y: np.ndarray, proba: np.ndarray, tune: np.ndarray) -> Callable[[np.ndarray], dict]:
    """Thresholds or class offsets tuned on rows ``tune`` only, once; the returned function gives the
    metrics of any rows decided with them."""
    labels, multilabel = config.task.labels, config.task.type == "multilabel"
    tuned = config.decision.tune and tune.any()
    if multilabel:
        thresholds = best_thresholds(proba[tune], Y[tune]) if tuned else np.full(len(labels), 0.5)
        return lambda score: multilabel_metrics(Y[score], (proba[score] >= thresholds).astype(int), labels)
    offsets = best_offsets(proba[tune], Y[tune], labels, config.decision.objective) if tuned else None
    return lambda score: multiclass_metrics(Y[score], apply_offsets(proba[score], offsets), labels)


def score_folds(config: Config, plan: FoldPlan, oof: np.ndarray, done: list[tuple[int, int]]) -> list[dict]:
    """Each finished fold ``(r, k)`` scored with a decision tuned on the other finished folds of its repeat.

    With every fold done this is the CV estimate; part-way (a sweep's running value) it uses the folds so
    far, and a first fold alone is scored with the untuned decision.
    """
    results = []
    corpora = plan.data.corpora
    corpus = plan.data.frame["corpus"].to_numpy() if corpora else None
    for r, k in done:
        others = np.isin(plan.assignments[r], [j for rr, j in done if rr == r and j != k])
        held = plan.held_out(r, k)
        metrics_of = held_out_scorer(config, plan.Y, oof[r], others)
        metrics = metrics_of(held)
        for name in corpora:  # the same decision, scored on each corpus's held-out sentences alone
            rows = held & (corpus == name)
            if rows.any():
                metrics.update({f"{name}/{metric}": value for metric, value in metrics_of(rows).items()})
        results.append(metrics)
    return results


def summarize(fold_metrics: list[dict]) -> dict[str, float]:
    """``cv/<metric>_mean`` and ``cv/<metric>_std`` over folds, for every metric the folds have."""
    summary = {}
    names = dict.fromkeys(name for m in fold_metrics for name in m)  # a corpus may miss from a fold
    for name in names:
        values = np.array([m[name] for m in fold_metrics if name in m])
        summary[f"cv/{name}_mean"], summary[f"cv/{name}_std"] = float(values.mean()), float(values.std())
    return summary


def cross_validate(
    config: Config,
    recorder: Recorder | None = None,
    *,
    config_path: str | Path | None = None,
    folds: int | None = None,
    repeats: int | None = None,
) -> str:
    """Cross-validate ``config``; return the parent run id (which also holds the final model).

    ``recorder``: where the runs go (default: MLflow, from the config); ``config_path``: the file the
    config came from, named in the run's name and tags; ``folds`` and ``repeats``: default ``split.*``.
    """
    recorder = default_recorder(config, recorder)
    folds = folds or config.split.folds
    repeats = repeats or config.split.repeats
    seed_everything(config.seed)
    with step("loading and checking data"):
        prepared = prepare(config)
        plan = plan_folds(config, prepared.data, prepared.model, folds, repeats)
    data, labels = prepared.data, config.task.labels

    where = recorder.open()
    stem = Path(config_path).stem if config_path else config.model.family
    run_name = f"{stem}-cv{folds}x{repeats}-{time.strftime('%m%d-%H%M%S')}"
    X = data.inputs
    tags = {**run_tags(config, config_path, prepared), CV_ROLE_TAG: "parent"}
    with recorder.run(run_name, tags) as parent:
        workdir = parent.workdir
        log.info("%s CV run %s (%s) at %s: %d folds x %d", recorder.name, run_name, parent.id, where, folds, repeats)
        parent.log_params(config_params(config))
        parent.log_params({"cv.folds": folds, "cv.repeats": repeats})
        parent.log_dataset(dataset_frame(data), source=str(data.path), name=data.path.name, context="train")
        oof = np.zeros((repeats, len(data), len(labels)))
        done, children = [], []
        for r in range(repeats):
            for k in range(folds):
                with step(f"fold {k + 1}/{folds} (repeat {r + 1}/{repeats})"):
                    children.append(_fold_run(parent, config, plan, r, k, oof))
                done.append((r, k))
        fold_metrics = score_folds(config, plan, oof, done)
        _log_fold_metrics(recorder, children, fold_metrics)
        summary = summarize(fold_metrics)
        parent.log_metrics(logged_summary(summary))  # every metric's mean and std: cv_summary.json
        _write_oof(workdir, data, labels, oof.mean(axis=0))

        with step(f"final model on all {len(data)} sentences"):
            final = build_model(config.model.family, config.task.type, labels, config.model.params, config.seed)
            final.fit(X, data.labels, sample_weight=data.sample_weights(config.data.weights))
            final.set_decision(oof.mean(axis=0), plan.Y, config.decision.objective, config.decision.tune)
        seen = {label for value in data.labels for label in (value if isinstance(value, list) else [value])}
        results = evaluate_all(parent, config, final, list(prepared.eval_sets.items()), seen, workdir)
        headline = [k for k in ("f1_macro", "f1_micro", "accuracy", "f_avg") if f"cv/{k}_mean" in summary]
        means = ", ".join(f"{k} {summary[f'cv/{k}_mean']:.3f} ± {summary[f'cv/{k}_std']:.3f}" for k in headline)
        lines = [f"cv {folds}x{repeats} (mean ± std over folds): {means}"]
        if results:
            lines.append(score_table(results))
        log.info("scores of CV run %s:\n%s", parent.id, "\n".join(lines))
        parent.set_note("```\n" + "\n".join(lines) + "\n```")
        (workdir / "config.yaml").write_text(dump_config(config), encoding="utf-8")
        (workdir / "cv_summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
        finish_run(parent, config, final, X, ("config.yaml", "cv_summary.json", "oof_predictions.csv"), results)
    return parent.id


def _fold_run(parent: Run, config: Config, plan: FoldPlan, r: int, k: int, oof: np.ndarray) -> str:
    """``fit_fold`` in a nested run; the held-out fold's scores go into ``oof``."""
    tags = {
        CV_ROLE_TAG: "fold",
        "tagger.cv_fold": f"{r}.{k}",
        "task": config.task.name,
        "model_family": config.model.family,
    }  # the recorder adds the process's tags: a fold left RUNNING by kill -9 is marked KILLED like its parent
    name = f"fold {k + 1}/{plan.folds}" + (f" (repeat {r + 1}/{plan.repeats})" if plan.repeats > 1 else "")
    with parent.child(name, tags) as child:
        held = plan.held_out(r, k)
        oof[r, held], seconds = fit_fold(config, plan, r, k)
        sizes = {"train_size": int((~held).sum()), "validation_size": int(held.sum())}
        child.log_metrics({"train_seconds": seconds, **sizes})
    return child.id


def _log_fold_metrics(recorder: Recorder, children: list[str], fold_metrics: list[dict]) -> None:
    """Each fold's held-out headline metrics, as ``validation/<metric>`` on its (ended) nested run."""
    for run_id, metrics in zip(children, fold_metrics, strict=True):
        child = recorder.attach(run_id)
        child.log_metrics({f"validation/{name}": float(v) for name, v in logged(metrics).items()})


def _write_oof(workdir: Path, data: LabelledData, labels: list[str], proba: np.ndarray) -> None:
    """Out-of-fold scores (mean over repeats) with gold labels, as ``oof_predictions.csv``."""
    frame = pd.DataFrame(
        {
            "id": data.frame["id"],
            "text": data.frame["text"],
            "target": data.frame["target"],
            "gold": [";".join(v) if isinstance(v, list) else v for v in data.labels],
        }
    )
    for j, label in enumerate(labels):
        frame[f"score_{label}"] = np.round(proba[:, j], 4)
    frame.to_csv(workdir / "oof_predictions.csv", index=False)
