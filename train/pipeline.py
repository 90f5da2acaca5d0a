"""One experiment, end to end: config → checked data → model → evaluation → MLflow run."""

from __future__ import annotations

import json
import logging
import random
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from train import leakage, tracking
from train.config import Config, dump_config
from train.data import LabelledData, load_for
from train.errors import TaggerError
from train.evaluation import EvalResult, evaluate
from train.pyfunc import ARTIFACT_KEY, TaggerModel, predict_frame
from train.registry import build_model
from train.split import train_dev_split

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


def _dataset_frame(data: LabelledData) -> pd.DataFrame:
    frame = data.frame[["id", "text", "target"]].copy()
    frame["labels"] = [";".join(v) if isinstance(v, list) else v for v in data.labels]
    return frame


def train(config: Config, config_path: str | Path | None = None) -> str:
    """Train and evaluate one config; return the MLflow run id."""
    seed_everything(config.seed)
    with step("loading and checking data"):
        data = load_for(config)
        eval_sets = {s.name: load_for(config, s) for s in config.evaluation.sets}
        leak_counts = check_leakage(config, data, eval_sets)
        train_idx, dev_idx = train_dev_split(
            data.frame,
            config.split.dev_fraction,
            multilabel=config.task.type == "multilabel",
            stratify=config.split.stratify,
            group_by_column=config.split.group_by_column,
            seed=config.split.seed,
        )
        train_part = LabelledData(data.path, data.frame.iloc[train_idx].reset_index(drop=True), data.sha256)
        dev_part = LabelledData(data.path, data.frame.iloc[dev_idx].reset_index(drop=True), data.sha256)
    log.info(
        "train %d, dev %d, eval sets: %s",
        len(train_part),
        len(dev_part),
        ", ".join(f"{k} ({len(v)})" for k, v in eval_sets.items()) or "none",
    )
    train_labels = {lab for v in train_part.labels for lab in (v if isinstance(v, list) else [v])}

    uri = tracking.setup(config.tracking.uri, config.experiment_name)
    stem = Path(config_path).stem if config_path else config.model.family
    run_name = config.tracking.run_name or f"{stem}-{time.strftime('%m%d-%H%M%S')}"
    commit, dirty = tracking.git_commit()
    tags = {
        "task": config.task.name,
        "task_type": config.task.type,
        "model_family": config.model.family,
        "git_commit": commit,
        "git_dirty": str(dirty),
        "mlflow.source.git.commit": commit,
        "config_file": str(config_path or ""),
        f"dataset_sha256.{data.path.name}": data.sha256,
        **{f"dataset_sha256.{name}": d.sha256 for name, d in eval_sets.items()},
        **{f"version.{k}": v for k, v in tracking.library_versions().items()},
    }
    with mlflow.start_run(run_name=run_name, tags=tags) as run, tempfile.TemporaryDirectory() as tmp:
        log.info("MLflow run %s (%s) in experiment '%s' at %s", run_name, run.info.run_id, config.experiment_name, uri)
        out = Path(tmp)
        mlflow.log_params(tracking.flatten(config.model_dump(mode="json", exclude={"extends"})))
        mlflow.log_input(
            mlflow.data.from_pandas(_dataset_frame(train_part), source=str(data.path), name=f"{data.path.name}:train"),
            context="train",
        )
        mlflow.log_input(
            mlflow.data.from_pandas(_dataset_frame(dev_part), source=str(data.path), name=f"{data.path.name}:dev"),
            context="dev",
        )
        for name, d in eval_sets.items():
            mlflow.log_input(mlflow.data.from_pandas(_dataset_frame(d), source=str(d.path), name=name), context="eval")

        with step(f"training {config.model.family}"):
            model = build_model(
                config.model.family, config.task.type, config.task.labels, config.model.params, config.seed
            )
            start = time.perf_counter()
            model.fit(train_part.inputs, train_part.labels, dev_part.inputs, dev_part.labels)
            model.tune_thresholds(dev_part.inputs, dev_part.labels)
            mlflow.log_metric("train_seconds", time.perf_counter() - start)
            mlflow.log_metrics(model.model_info())
        results: list[EvalResult] = []
        with step("evaluating"):
            for name, part in [("dev", dev_part), *eval_sets.items()]:
                result = evaluate(
                    model,
                    part,
                    name,
                    bootstrap_samples=config.evaluation.bootstrap_samples,
                    confidence=config.evaluation.confidence,
                    seed=config.seed,
                    train_labels=train_labels,
                )
                for warning in result.warnings:
                    log.warning(warning)
                results.append(result)
                mlflow.log_metrics({f"{name}/{k}": v for k, v in result.metrics.items() if np.isfinite(v)})
                result.write(out / "reports")
        summary = {
            "run_id": run.info.run_id,
            "run_name": run_name,
            "task": config.task.name,
            "family": config.model.family,
            "train_size": len(train_part),
            "dev_size": len(dev_part),
            "leakage": leak_counts,
            "thresholds": dict(zip(model.labels, map(float, model.thresholds_), strict=True)),
            "metrics": {r.name: r.metrics for r in results},
            "warnings": [w for r in results for w in r.warnings],
        }
        (out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
        (out / "config.yaml").write_text(dump_config(config), encoding="utf-8")
        (out / "environment.json").write_text(json.dumps(tracking.library_versions(), indent=2), "utf-8")

        if config.tracking.log_model:
            with step("logging model"):
                log_model(model, train_part, out)
        # artifacts go up together at the end: a failed run leaves no partial reports
        mlflow.log_artifacts(str(out / "reports"), "reports")
        for name in ("summary.json", "config.yaml", "environment.json"):
            mlflow.log_artifact(str(out / name))
        mlflow.set_tag("thresholds", json.dumps(summary["thresholds"]))
    return run.info.run_id


def log_model(model, train_part: LabelledData, out: Path):
    """Log ``model`` as a tagger pyfunc with signature and input example."""
    path = out / "classifier"
    model.save(path)
    example = train_part.inputs.head(3).copy()
    if not example["target"].str.strip().any():
        example = example[["text"]]
    signature = mlflow.models.infer_signature(example, predict_frame(model, example))
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=TaggerModel(),
        artifacts={ARTIFACT_KEY: str(path)},
        code_paths=[str(Path(__file__).parent)],
        signature=signature,
        input_example=example,
        pip_requirements=pinned_requirements(tuple(model.requirements)),
    )


def pinned_requirements(extra: tuple[str, ...] = ()) -> list[str]:
    """Pinned pip requirements of a logged model: the common stack plus ``extra`` packages."""
    from importlib import metadata

    names = ["mlflow", "scikit-learn", "numpy", "pandas", "pydantic", "catalogue", "joblib", "pysbd", "pyyaml", *extra]
    pins = []
    for name in names:
        try:
            pins.append(f"{name}=={metadata.version(name).split('+')[0]}")
        except metadata.PackageNotFoundError:
            pins.append(name)
    return pins
