"""Cross-validation of one config: an MLflow parent run, a nested run per fold, and a final model.

Steps: ``prepare`` (the same checks as ``tagger train``), folds that keep groups together and balance
every label (``data.folds``), one nested run per fold (fit on the other folds, score the held-out
one), per-label thresholds tuned on the out-of-fold scores of the *other* folds before a fold is
scored, ``cv/<metric>_mean`` and ``_std`` on the parent, then a final model refitted on all the data
with thresholds from all out-of-fold scores, scored on the evaluation sets and logged like any run,
so ``tagger promote`` can pick a CV parent.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities import Metric

from train.config import Config, dump_config
from train.data.folds import grouped_stratified_folds
from train.data.loading import LabelledData
from train.errors import TaggerError
from train.evaluation.evaluate import score_table
from train.evaluation.metrics import multiclass_metrics, multilabel_metrics
from train.models.base import best_thresholds
from train.registry import build_model
from train.tracking import store
from train.tracking.packaging import log_classifier
from train.training.pipeline import (
    check_trainable,
    dataset_frame,
    evaluate_all,
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


def _decide(proba: np.ndarray, multilabel: bool, thresholds: np.ndarray | None) -> np.ndarray:
    if multilabel:
        return (proba >= thresholds).astype(int)
    return proba.argmax(axis=1)


def _metrics(Y: np.ndarray, proba: np.ndarray, labels: list[str], multilabel: bool, thresholds) -> dict[str, float]:
    pred = _decide(proba, multilabel, thresholds)
    if multilabel:
        return multilabel_metrics(Y, pred, labels)
    return multiclass_metrics(Y, pred, labels)


def cross_validate(
    config: Config, config_path: str | Path | None = None, folds: int | None = None, repeats: int | None = None
) -> str:
    """Cross-validate ``config``; return the parent run id (which also holds the final model)."""
    folds = folds or config.split.folds
    repeats = repeats or config.split.repeats
    seed_everything(config.seed)
    with step("loading and checking data"):
        prepared = prepare(config)
    data, labels = prepared.data, config.task.labels
    multilabel = config.task.type == "multilabel"
    model = prepared.model
    Y = model.encode(data.labels)  # indicators (multi-label) or class indices (multi-class)
    onehot = Y if multilabel else np.eye(len(labels), dtype=int)[Y]
    assignments = fold_assignments(config, data, onehot, folds, repeats)
    for fold_ids in assignments:  # every training part must be fittable before any run exists
        for k in range(folds):
            part = LabelledData(data.path, data.frame[fold_ids != k].reset_index(drop=True), data.sha256)
            check_trainable(config, part, model)

    uri = store.setup(config.tracking.uri, config.experiment_name)
    store.mark_stale_runs()
    stem = Path(config_path).stem if config_path else config.model.family
    run_name = f"{stem}-cv{folds}x{repeats}-{time.strftime('%m%d-%H%M%S')}"
    workdir = Path(tempfile.mkdtemp(prefix="tagger-run-"))
    X = data.inputs
    try:
        tags = {**run_tags(config, config_path, prepared, workdir), CV_ROLE_TAG: "parent"}
        with mlflow.start_run(run_name=run_name, tags=tags) as parent:
            log.info("MLflow CV run %s (%s) at %s: %d folds x %d", run_name, parent.info.run_id, uri, folds, repeats)
            mlflow.log_params(store.flatten(config.model_dump(mode="json", exclude={"extends"})))
            mlflow.log_params({"cv.folds": folds, "cv.repeats": repeats})
            dataset = mlflow.data.from_pandas(dataset_frame(data), source=str(data.path), name=data.path.name)
            store.retry_on_conflict(lambda: mlflow.log_input(dataset, context="train"))
            oof = np.zeros((repeats, len(data), len(labels)))
            children = []
            for r, fold_ids in enumerate(assignments):
                for k in range(folds):
                    with step(f"fold {k + 1}/{folds} (repeat {r + 1}/{repeats})"):
                        children.append((r, k, _fit_fold(config, X, data.labels, fold_ids, k, r, oof)))
            fold_metrics = _score_folds(config, Y, onehot, oof, assignments, children)
            summary = {}
            for name in fold_metrics[0]:
                values = np.array([m[name] for m in fold_metrics])
                summary[f"cv/{name}_mean"], summary[f"cv/{name}_std"] = float(values.mean()), float(values.std())
            mlflow.log_metrics({k: v for k, v in summary.items() if np.isfinite(v)})
            _write_oof(workdir, data, labels, oof.mean(axis=0))

            with step(f"final model on all {len(data)} sentences"):
                final = build_model(config.model.family, config.task.type, labels, config.model.params, config.seed)
                final.fit(X, data.labels)
                if multilabel:
                    final.thresholds_ = best_thresholds(oof.mean(axis=0), Y)
            seen = {label for value in data.labels for label in (value if isinstance(value, list) else [value])}
            results = evaluate_all(config, final, list(prepared.eval_sets.items()), seen, workdir)
            headline = {k: summary.get(f"cv/{k}_mean") for k in ("f1_macro", "f1_micro", "accuracy", "f_avg")}
            lines = [f"cv {folds}x{repeats}: " + ", ".join(f"{k} {v:.3f}" for k, v in headline.items() if v)]
            if results:
                lines.append(score_table(results))
            log.info("scores of CV run %s:\n%s", parent.info.run_id, "\n".join(lines))
            mlflow.set_tag("mlflow.note.content", "```\n" + "\n".join(lines) + "\n```")
            (workdir / "config.yaml").write_text(dump_config(config), encoding="utf-8")
            (workdir / "cv_summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
            if config.tracking.log_model:
                with step("logging model"):
                    log_classifier(final, X, workdir)
            if (workdir / "reports").exists():
                mlflow.log_artifacts(str(workdir / "reports"), "reports")
            for name in ("config.yaml", "cv_summary.json", "oof_predictions.csv"):
                mlflow.log_artifact(str(workdir / name))
            mlflow.set_tag("thresholds", json.dumps(dict(zip(labels, map(float, final.thresholds_), strict=True))))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return parent.info.run_id


def _fit_fold(config: Config, X: pd.DataFrame, y: list, fold_ids: np.ndarray, k: int, r: int, oof) -> str:
    """Fit on every fold but ``k`` in a nested run; keep the held-out fold's scores in ``oof``."""
    train_rows, held_out = np.flatnonzero(fold_ids != k), np.flatnonzero(fold_ids == k)
    tags = {
        CV_ROLE_TAG: "fold",
        "tagger.cv_fold": f"{r}.{k}",
        "task": config.task.name,
        "model_family": config.model.family,
    }
    with mlflow.start_run(run_name=f"fold {r}.{k}", nested=True, tags=tags) as child:
        model = build_model(config.model.family, config.task.type, config.task.labels, config.model.params, config.seed)
        start = time.perf_counter()
        y_train = [y[i] for i in train_rows]
        y_held = [y[i] for i in held_out]
        model.fit(X.iloc[train_rows], y_train, X.iloc[held_out], y_held)
        seconds = time.perf_counter() - start
        mlflow.log_metrics({"train_seconds": seconds, "train_size": len(train_rows), "validation_size": len(held_out)})
        oof[r, held_out] = model.predict_proba(X.iloc[held_out])
    return child.info.run_id


def _score_folds(config: Config, Y, onehot, oof, assignments, children) -> list[dict[str, float]]:
    """Score each fold with thresholds tuned on the out-of-fold scores of the other folds; log to its run."""
    multilabel = config.task.type == "multilabel"
    client = mlflow.MlflowClient()
    results = []
    for r, k, run_id in children:
        held_out = assignments[r] == k
        thresholds = best_thresholds(oof[r, ~held_out], onehot[~held_out]) if multilabel else None
        metrics = _metrics(Y[held_out], oof[r, held_out], config.task.labels, multilabel, thresholds)
        stamp = int(time.time() * 1000)
        values = [Metric(f"validation/{name}", float(v), stamp, 0) for name, v in metrics.items() if np.isfinite(v)]
        client.log_batch(run_id, metrics=values)
        results.append(metrics)
    return results


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
