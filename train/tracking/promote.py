"""Promote the best finished run of a task to the MLflow Model Registry as its ``champion``.

The winner is the run with the best metric (highest; lowest for losses, time and size; ties: higher
dev macro F1, then newer). It is registered as ``tagger-<task>``; the alias ``champion`` moves to the
new version and ``previous`` to the former champion. Why it won (its metric values and the
runner-up's) goes into the version's description and tags.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException

from train.domain import BUNDLE, BUNDLE_EXPERIMENT, CHAMPION, PREVIOUS, experiment_name, registered_name
from train.errors import TaggerError
from train.tracking import store
from train.tracking.packaging import bundle_model_arguments
from train.tracking.runs import VALIDATION_METRIC, finished_runs, rank


@dataclass
class Choice:
    task: str
    metric: str
    winner: pd.Series
    runner_up: pd.Series | None
    significance: str = ""

    def describe(self) -> str:
        def line(run: pd.Series) -> str:
            tests = [
                f"{c.removeprefix('metrics.')} = {run[c]:.4f}"
                for c in run.index
                if c.startswith("metrics.")
                and c.endswith("/f1_macro")
                and c.split("/")[0].removeprefix("metrics.") not in ("dev", "validation")
                and pd.notna(run[c])
            ]
            test_scores = f"; test: {', '.join(tests)}" if tests else ""
            return (
                f"run {run['run_id']} ({run.get('tags.mlflow.runName')}, {run.get('tags.model_family')}): "
                f"{self.metric} = {run[f'metrics.{self.metric}']:.4f}{test_scores}"
            )

        text = f"Best {self.task} run by {self.metric}: {line(self.winner)}."
        if self.runner_up is not None:
            text += f" Runner-up: {line(self.runner_up)}."
        if self.significance:
            text += f" {self.significance}"
        return text


def significance(winner: pd.Series, runner_up: pd.Series | None, set_name: str = "seeds") -> str:
    """Whether the winner beats the runner-up on ``set_name`` beyond chance (paired bootstrap), as a sentence."""
    if runner_up is None:
        return ""
    from train.evaluation.compare import compare_runs

    try:
        result = compare_runs(runner_up["run_id"], winner["run_id"], set_name, "f1_macro", samples=2000)
    except TaggerError:
        return ""
    d = result.metric
    verdict = "significant" if d.p_value < 0.05 else "not significant"
    return (
        f"On {set_name}, winner - runner-up f1_macro = {d.diff:+.4f} "
        f"[{d.low:+.4f}, {d.high:+.4f}], p = {d.p_value:.3f}: {verdict}."
    )


def choose(task: str, metric: str = VALIDATION_METRIC) -> Choice:
    """The best finished run of ``task`` that logged a model, by ``metric`` (default: the validation score,
    the CV mean where a run has one, else dev), with a paired test of its margin over the runner-up."""
    runs = finished_runs(experiment_name(task), task)
    column = f"metrics.{metric}"
    if runs.empty or column not in runs.columns:
        raise TaggerError(f"no finished {task} run logged the metric '{metric}'")
    runs = runs[runs[column].notna()]
    if runs.empty:
        raise TaggerError(f"no finished {task} run with a logged model has the metric '{metric}'")
    runs = rank(runs, metric)
    runner_up = runs.iloc[1] if len(runs) > 1 else None
    return Choice(task, metric, runs.iloc[0], runner_up, significance(runs.iloc[0], runner_up))


def promote(task: str, metric: str = VALIDATION_METRIC, dry_run: bool = False) -> tuple[Choice, str | None, bool]:
    """Register the chosen run and move the aliases.

    Returns the choice, the champion version (None on a dry run) and whether it changed: when the
    chosen run already is the champion, nothing is registered.
    """
    choice = choose(task, metric)
    if dry_run:
        return choice, None, False
    client = mlflow.MlflowClient()
    name = registered_name(task)
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description=f"tagger {task} model; alias '{CHAMPION}' is served.")
    former = None
    try:
        former = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        pass
    run_id = choice.winner["run_id"]
    if former is not None and former.run_id == run_id:
        return choice, former.version, False
    version = mlflow.register_model(f"runs:/{run_id}/model", name)
    client.update_model_version(name, version.version, description=choice.describe())
    tags = {
        "metric": metric,
        "metric_value": f"{choice.winner[f'metrics.{metric}']:.6f}",
        "model_family": str(choice.winner.get("tags.model_family")),
        "run_id": run_id,
    }
    if choice.runner_up is not None:
        tags.update(
            {
                "runner_up_run_id": choice.runner_up["run_id"],
                "runner_up_metric_value": f"{choice.runner_up[f'metrics.{metric}']:.6f}",
            }
        )
    for key, value in tags.items():
        client.set_model_version_tag(name, version.version, key, value)
    client.set_registered_model_alias(name, CHAMPION, version.version)
    if former is not None:
        client.set_registered_model_alias(name, PREVIOUS, former.version)
    return choice, version.version, True


def rollback(task: str, dry_run: bool = False) -> tuple[str, str]:
    """Swap ``champion`` and ``previous`` of ``tagger-<task>``; return (new champion, new previous) versions."""
    store.setup()
    client = mlflow.MlflowClient()
    name = registered_name(task)
    try:
        previous = client.get_model_version_by_alias(name, PREVIOUS)
        champion = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        raise TaggerError(f"{name} has no '{PREVIOUS}' version to roll back to") from None
    if not dry_run:
        client.set_registered_model_alias(name, CHAMPION, previous.version)
        client.set_registered_model_alias(name, PREVIOUS, champion.version)
    return previous.version, champion.version


def classifier_folder(model_uri: str, dst_path: str) -> str:
    """Download a logged tagger model and return its saved classifier folder."""
    from pathlib import Path

    local = mlflow.artifacts.download_artifacts(model_uri, dst_path=dst_path)
    return str(Path(local) / "artifacts" / "classifier")


def register_bundle() -> tuple[str, bool] | None:
    """Register the topic + stance champions as one pyfunc ``tagger`` (alias ``champion``).

    Returns the champion version of ``tagger`` and whether it is new; None while a task has no champion.
    When the current ``tagger@champion`` already holds these two versions nothing is registered. The
    packaging run is logged in the ``tagger-bundle`` experiment.
    """
    import tempfile
    from pathlib import Path

    client = mlflow.MlflowClient()
    versions = {}
    for task in ("topic", "stance"):
        try:
            versions[task] = str(client.get_model_version_by_alias(registered_name(task), CHAMPION).version)
        except MlflowException:
            return None
    wanted = {f"{task}_version": version for task, version in versions.items()}
    try:
        current = client.get_model_version_by_alias(BUNDLE, CHAMPION)
        if all(current.tags.get(key) == value for key, value in wanted.items()):
            return current.version, False
    except MlflowException:
        current = None
    with tempfile.TemporaryDirectory() as tmp:
        folders = {
            task: classifier_folder(f"models:/{registered_name(task)}@{CHAMPION}", str(Path(tmp) / task))
            for task in versions
        }
        with mlflow.start_run(
            run_name="tagger-bundle",
            experiment_id=store.ensure_experiment(BUNDLE_EXPERIMENT),
            tags=store.process_tags(),
        ) as run:
            mlflow.set_tags(wanted)
            info = mlflow.pyfunc.log_model(name="model", **bundle_model_arguments(folders))
    version = mlflow.register_model(info.model_uri, BUNDLE, tags=wanted)
    client.update_model_version(
        BUNDLE,
        version.version,
        description=f"topic v{versions['topic']} + stance v{versions['stance']}, logged in run {run.info.run_id}",
    )
    if current is not None:
        client.set_registered_model_alias(BUNDLE, PREVIOUS, current.version)
    client.set_registered_model_alias(BUNDLE, CHAMPION, version.version)
    return version.version, True
