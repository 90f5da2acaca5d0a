"""One experiment, end to end: config → checked data → model → evaluation → a tracked run (``Recorder``)."""

from __future__ import annotations

import json
import logging
import random
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from train.config import Config, dump_config
from train.data import leakage
from train.data.folds import grouped_stratified_folds
from train.data.loading import LabelledData, load_for
from train.data.split import train_dev_split
from train.errors import TaggerError
from train.evaluation.evaluate import EvalResult, evaluate, score_table
from train.evaluation.metrics import logged, per_label_table
from train.models.base import TextClassifier
from train.registry import build_model
from train.tracking import store
from train.tracking.recorder import Recorder, Run

log = logging.getLogger("tagger")


@contextmanager
def step(name: str):
    """Log a step's start and how long it took (progress on the terminal)."""
    log.info("%s ...", name)
    start = time.perf_counter()
    yield
    log.info("%s done (%.1fs)", name, time.perf_counter() - start)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)


def check_leakage(config: Config, train: LabelledData, eval_sets: dict[str, LabelledData]) -> dict[str, int]:
    """Refuse training data that repeats evaluation sentences, unless the config allows it."""
    counts = {}
    for name, data in eval_sets.items():
        leaks = leakage.find_leaks(train.texts, data.texts, config.data.leakage_threshold)
        counts[name] = len(leaks)
        if leaks and not config.data.allow_leakage:
            raise TaggerError(
                f"{train.path}: {len(leaks)} training sentence(s) match evaluation set '{name}' "
                f"({data.path}) at Jaccard >= {config.data.leakage_threshold}: {leakage.describe(leaks)}; "
                "remove them or set data.allow_leakage: true"
            )
        if leaks:
            log.warning("leakage allowed by config: %d sentence(s) shared with '%s'", len(leaks), name)
    return counts


def dataset_frame(data: LabelledData) -> pd.DataFrame:
    frame = data.frame[["id", "text", "target"]].copy()
    frame["labels"] = [";".join(v) if isinstance(v, list) else v for v in data.labels]
    return frame


@dataclass
class Prepared:
    """Everything a run needs, loaded and checked before the run exists."""

    data: LabelledData
    eval_sets: dict[str, LabelledData]
    leak_counts: dict[str, int]
    train_part: LabelledData
    dev_part: LabelledData
    model: TextClassifier


MIN_TRAINING_SENTENCES = 10


def prepare(config: Config) -> Prepared:
    """Load and check the data, split it, build the model and check the model can fit it.

    Every user error (bad data, a setting the data refutes) surfaces here, before a run is created,
    so nothing is left behind in the store.
    """
    data = load_for(config)
    eval_sets = {s.name: load_for(config, s) for s in config.evaluation.sets}
    leak_counts = check_leakage(config, data, eval_sets)
    if len(data) < MIN_TRAINING_SENTENCES:
        raise TaggerError(f"{data.path}: {len(data)} sentences; training needs at least {MIN_TRAINING_SENTENCES}")
    try:
        train_idx, dev_idx = train_dev_split(
            data.frame,
            config.split.dev_fraction,
            multilabel=config.task.type == "multilabel",
            stratify=config.split.stratify,
            group_by_column=config.split.group_by_column,
            seed=config.split.seed,
        )
    except ValueError as exc:
        raise TaggerError(f"{data.path}: cannot split into train and dev: {exc}") from None
    train_part, dev_part = data.subset(train_idx), data.subset(dev_idx)
    model = build_model(config.model.family, config.task.type, config.task.labels, config.model.params, config.seed)
    check_trainable(config, train_part, model)
    return Prepared(data, eval_sets, leak_counts, train_part, dev_part, model)


def check_trainable(config: Config, train_part: LabelledData, model: TextClassifier) -> None:
    """Refuse training labels a model cannot learn from, and settings the family says the data refutes."""
    counts = Counter(label for value in train_part.labels for label in (value if isinstance(value, list) else [value]))
    where = f"{train_part.path} (training part, {len(train_part)} sentences)"
    if config.task.type == "multiclass":
        missing = [label for label in config.task.labels if counts[label] == 0]
        if missing:
            found = ", ".join(f"{label} {counts[label]}" for label in config.task.labels)
            raise TaggerError(
                f"{where}: no sentence labelled {', '.join(repr(m) for m in missing)} ({found}); "
                "a multi-class model must see every label: add data or remove it from task.labels"
            )
    elif not counts:
        raise TaggerError(f"{where}: no sentence has any of the labels {', '.join(config.task.labels)}")
    else:
        for label in config.task.labels:
            if counts[label] == 0:
                log.warning("label '%s' has no training sentences; it will never be predicted", label)
    if config.data.weights and not model.supports_sample_weight:
        raise TaggerError(
            f"data.weights: family '{config.model.family}' cannot weight sentences (its fit takes no sample "
            "weights); remove data.weights or use a TF-IDF or embedding family"
        )
    try:
        model.check_data(train_part.inputs, model.encode(train_part.labels))
    except ValueError as exc:
        raise TaggerError(f"{where}: {exc}") from None


def default_recorder(config: Config, recorder: Recorder | None) -> Recorder:
    """``recorder``, else the MLflow recorder of the config's ``tracking`` settings."""
    if recorder is not None:
        return recorder
    from train.tracking.mlflow_recorder import MlflowRecorder

    return MlflowRecorder.for_config(config)


def train(config: Config, recorder: Recorder | None = None, *, config_path: str | Path | None = None) -> str:
    """Train and evaluate one config; return the run id.

    Steps: ``prepare`` (data, split, model; all checks), open the run and log inputs, fit and tune
    thresholds, evaluate on dev and every evaluation set, log the model and the reports.
    ``recorder``: where the run goes (default: MLflow, from the config); ``config_path``: the file
    the config came from, named in the run's name and tags.
    """
    recorder = default_recorder(config, recorder)
    seed_everything(config.seed)
    with step("loading and checking data"):
        prepared = prepare(config)
    train_part, dev_part, eval_sets = prepared.train_part, prepared.dev_part, prepared.eval_sets
    log.info(
        "train %d, dev %d, eval sets: %s",
        len(train_part),
        len(dev_part),
        ", ".join(f"{k} ({len(v)})" for k, v in eval_sets.items()) or "none",
    )
    train_labels = {lab for v in train_part.labels for lab in (v if isinstance(v, list) else [v])}

    where = recorder.open()
    stem = Path(config_path).stem if config_path else config.model.family
    run_name = config.tracking.run_name or f"{stem}-{time.strftime('%m%d-%H%M%S')}"
    with recorder.run(run_name, run_tags(config, config_path, prepared)) as run:
        workdir = run.workdir
        log.info(
            "%s run %s (%s) in experiment '%s' at %s", recorder.name, run_name, run.id, config.experiment_name, where
        )
        log_inputs(run, config, prepared)
        model = prepared.model
        with step(f"training {config.model.family}"):
            start = time.perf_counter()
            model.fit(
                train_part.inputs,
                train_part.labels,
                dev_part.inputs,
                dev_part.labels,
                sample_weight=train_part.sample_weights(config.data.weights),
            )
            dev_proba, dev_gold = model.predict_proba(dev_part.inputs), model.encode(dev_part.labels)
            dev_predicted = cross_fitted_decisions(config, model, dev_part, dev_proba)
            # the decision the model ships with: tuned on the whole dev set
            model.set_decision(dev_proba, dev_gold, config.decision.objective, config.decision.tune)
            train_seconds = time.perf_counter() - start
        if len(model.backends) > 1:
            check_parity(run, model, [dev_part, *eval_sets.values()])
        with step("evaluating"):
            corpora = [(f"dev_{n}", dev_part.frame["corpus"].to_numpy() == n) for n in dev_part.corpora]
            corpora = [(name, rows) for name, rows in corpora if rows.any()]
            parts = [("dev", dev_part), *[(name, dev_part.subset(rows)) for name, rows in corpora], *eval_sets.items()]
            predicted = None
            if dev_predicted is not None:  # dev and its corpora are scored with the cross-fitted decisions
                predicted = {"dev": dev_predicted}
                predicted.update({name: [dev_predicted[i] for i in np.flatnonzero(rows)] for name, rows in corpora})
            results = evaluate_all(run, config, model, parts, train_labels, workdir, predicted)
        # logged after the scores: the MLflow compare page plots a run's first metric by default
        run.log_metrics({"train_seconds": train_seconds, **model.model_info()})
        confidence = f"{config.evaluation.confidence:.0%} bootstrap intervals"
        dev_scoring = "cross-fitted" if dev_predicted is not None else "untuned"
        run.set_tags({DEV_SCORING_TAG: dev_scoring})
        if dev_predicted is not None:
            confidence += "; dev decided by thresholds/offsets tuned on the other half of dev"
        table = score_table(results)
        log.info("scores of run %s (%s):\n%s", run.id, confidence, table)
        # the run's description in the tracking UI: the headline scores, readable without picking columns
        run.set_note(f"{config.model.family} ({confidence})\n\n```\n{table}\n```")
        write_run_files(config, run, run_name, prepared, results, workdir)
        finish_run(run, config, model, train_part.inputs, ("summary.json", "config.yaml", "environment.json"), results)
    return run.id


def finish_run(
    run: Run,
    config: Config,
    model: TextClassifier,
    example: pd.DataFrame,
    files: tuple[str, ...],
    results: list[EvalResult] = (),
) -> None:
    """The end of a run that made a model (train, and the final model of cv): the model (unless
    ``tracking.log_model`` is off), the reports and ``files`` from the run's work folder, each evaluated
    set's per-label table (``reports/<set>_per_label.json``), the decision tags.
    Artifacts go up together at the end: a failed run leaves no partial reports."""
    workdir = run.workdir
    if config.tracking.log_model:
        with step("logging model"):
            run.log_model(model, example, workdir)
    if (workdir / "reports").exists():
        run.log_artifact(workdir / "reports", "reports")
    for name in files:
        run.log_artifact(workdir / name)
    for result in results:
        run.log_table(per_label_table(result.metrics, result.labels), f"reports/{result.name}_per_label.json")
    run.set_tags({name: json.dumps(values) for name, values in model.decision_info().items()})


DEV_SCORING_TAG = "tagger.dev_scoring"  # how dev/* was scored: "cross-fitted" or "untuned"


def dev_halves(config: Config, model: TextClassifier, dev: LabelledData) -> np.ndarray:
    """0 or 1 for each dev sentence: whole documents where ``split.group_by_column``, every label
    balanced between the halves where ``split.stratify`` (as the train/dev split)."""
    Y = model.encode(dev.labels)
    onehot = Y if model.multilabel else np.eye(len(model.labels), dtype=int)[Y]
    strata = onehot if config.split.stratify else np.zeros((len(dev), 1))
    groups = dev.frame["group"]
    use_groups = config.split.group_by_column and groups.notna().all() and groups.nunique() >= 2
    return grouped_stratified_folds(strata, groups.to_numpy() if use_groups else None, 2, config.split.seed)


def cross_fitted_decisions(
    config: Config, model: TextClassifier, dev: LabelledData, proba: np.ndarray, halves: np.ndarray | None = None
) -> list | None:
    """Dev labels decided so that no sentence is scored by a decision tuned on it: dev is halved
    (``dev_halves``, unless given) and each half decided by thresholds or offsets tuned on the other
    half. None with ``decision.tune: false`` (the untuned decision is honest as it is).

    ``dev/*`` then estimates the shipped model, whose decision is tuned on all of dev, slightly
    pessimistically (each half's decision saw half the sentences), instead of optimistically.
    """
    if not config.decision.tune:
        return None
    Y = model.encode(dev.labels)
    halves = dev_halves(config, model, dev) if halves is None else halves
    predicted: list = [None] * len(dev)
    for half in (0, 1):
        model.set_decision(proba[halves != half], Y[halves != half], config.decision.objective)
        rows = np.flatnonzero(halves == half)
        for i, value in zip(rows, model.decide(proba[rows]), strict=True):
            predicted[i] = value
    return predicted


def check_parity(run: Run, model: TextClassifier, parts: list[LabelledData]) -> None:
    """Each inference backend against the reference one on the held-out sentences (dev and the
    evaluation sets): label agreement, score differences and speed, logged as ``parity/<backend>/*``
    and kept with the model (``--backend auto`` and the refusal below 99% read them)."""
    frame = pd.concat([part.inputs for part in parts if len(part)], ignore_index=True)
    if frame.empty:
        return
    with step(f"checking backend parity on {len(frame)} held-out sentences"):
        measured = model.measure_parity(frame)
    for backend, figures in measured.items():
        run.log_metrics({f"parity/{backend}/{name}": value for name, value in figures.items()})
        log.info(
            "backend %s: %.1f%% same labels, max score difference %.4f, %.0f sentences/s",
            backend,
            100 * figures["agreement"],
            figures["max_abs_diff"],
            figures["sentences_per_second"],
        )


def run_tags(config: Config, config_path, prepared: Prepared) -> dict[str, str]:
    """Provenance tags: task, family, git commit, dataset hashes, library versions (the recorder adds
    the owning process's)."""
    commit, dirty = store.git_commit()
    return {
        "task": config.task.name,
        "task_type": config.task.type,
        "model_family": config.model.family,
        "git_commit": commit,
        "git_dirty": str(dirty),
        "config_file": str(config_path or ""),
        **(
            {f"dataset_sha256.{path.name}": sha for path, sha in prepared.data.files.values()}
            if prepared.data.files
            else {f"dataset_sha256.{prepared.data.path.name}": prepared.data.sha256}
        ),
        **{f"dataset_sha256.{name}": d.sha256 for name, d in prepared.eval_sets.items()},
        **{f"version.{k}": v for k, v in store.library_versions().items()},
    }


def config_params(config: Config) -> dict[str, str]:
    """The resolved config as flat ``a.b.c`` params."""
    return store.flatten(config.model_dump(mode="json", exclude={"extends"}))


def log_inputs(run: Run, config: Config, prepared: Prepared) -> None:
    """The resolved config as params, and the train, dev and evaluation data as the run's datasets."""
    data = prepared.data
    run.log_params(config_params(config))
    inputs = [
        (prepared.train_part, str(data.path), f"{data.path.name}:train", "train"),
        (prepared.dev_part, str(data.path), f"{data.path.name}:dev", "dev"),
        *[(d, str(d.path), name, "eval") for name, d in prepared.eval_sets.items()],
    ]
    for part, source, name, context in inputs:
        run.log_dataset(dataset_frame(part), source=source, name=name, context=context)


def evaluate_all(
    run: Run,
    config: Config,
    model: TextClassifier,
    parts: list[tuple[str, LabelledData]],
    train_labels: set,
    workdir: Path,
    predicted: dict[str, list] | None = None,
) -> list[EvalResult]:
    """Evaluate on each named part, log its headline ``<part>/<metric>`` (``metrics.logged``) and write
    its reports, with every metric, under ``workdir``. ``predicted``: labels decided elsewhere, by part
    name (dev's cross-fitted decisions); other parts use the model's decision."""
    results = []
    for name, part in parts:
        result = evaluate(
            model,
            part,
            name,
            bootstrap_samples=config.evaluation.bootstrap_samples,
            confidence=config.evaluation.confidence,
            seed=config.seed,
            train_labels=train_labels,
            predicted=(predicted or {}).get(name),
        )
        for warning in result.warnings:
            log.warning(warning)
        results.append(result)
        run.log_metrics({f"{name}/{k}": v for k, v in logged(result.metrics).items()})
        result.write(workdir / "reports")
    return results


def write_run_files(
    config: Config, run: Run, run_name: str, prepared: Prepared, results: list[EvalResult], workdir: Path
) -> None:
    """``summary.json``, the resolved ``config.yaml`` and ``environment.json``, logged with the run."""
    model = prepared.model
    summary = {
        "run_id": run.id,
        "run_name": run_name,
        "task": config.task.name,
        "family": config.model.family,
        "train_size": len(prepared.train_part),
        "dev_size": len(prepared.dev_part),
        "leakage": prepared.leak_counts,
        **model.decision_info(),
        "metrics": {r.name: r.metrics for r in results},
        "warnings": [w for r in results for w in r.warnings],
    }
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    (workdir / "config.yaml").write_text(dump_config(config), encoding="utf-8")
    (workdir / "environment.json").write_text(json.dumps(store.library_versions(), indent=2), "utf-8")
