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

from train import tracking
from train.errors import TaggerError
from train.runs import finished_runs, rank

CHAMPION = "champion"
PREVIOUS = "previous"


def registered_name(task: str) -> str:
    return f"tagger-{task}"


@dataclass
class Choice:
    task: str
    metric: str
    winner: pd.Series
    runner_up: pd.Series | None

    def describe(self) -> str:
        def line(run: pd.Series) -> str:
            return (
                f"run {run['run_id']} ({run.get('tags.mlflow.runName')}, {run.get('tags.model_family')}): "
                f"{self.metric} = {run[f'metrics.{self.metric}']:.4f}, "
                f"dev/f1_macro = {run.get('metrics.dev/f1_macro'):.4f}"
            )

        text = f"Best {self.task} run by {self.metric}: {line(self.winner)}."
        if self.runner_up is not None:
            text += f" Runner-up: {line(self.runner_up)}."
        return text


def choose(task: str, metric: str = "seeds/f1_macro") -> Choice:
    """The best finished run of ``task`` that logged a model, by ``metric``."""
    runs = finished_runs(f"tagger-{task}", task)
    column = f"metrics.{metric}"
    if runs.empty or column not in runs.columns:
        raise TaggerError(f"no finished {task} run logged the metric '{metric}'")
    runs = runs[runs[column].notna()]
    if runs.empty:
        raise TaggerError(f"no finished {task} run with a logged model has the metric '{metric}'")
    runs = rank(runs, metric)
    runner_up = runs.iloc[1] if len(runs) > 1 else None
    return Choice(task, metric, runs.iloc[0], runner_up)


def promote(task: str, metric: str = "seeds/f1_macro", dry_run: bool = False) -> tuple[Choice, str | None]:
    """Register the chosen run and move the aliases; return the choice and the new version (None on dry run)."""
    choice = choose(task, metric)
    if dry_run:
        return choice, None
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
        return choice, former.version
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
    return choice, version.version


def rollback(task: str, dry_run: bool = False) -> tuple[str, str]:
    """Swap ``champion`` and ``previous`` of ``tagger-<task>``; return (new champion, new previous) versions."""
    tracking.setup()
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


BUNDLE = "tagger"


def bundle_model_arguments(folders: dict[str, str]) -> dict:
    """What ``mlflow.pyfunc.log_model``/``save_model`` need for a topic + stance ``TaggerBundle``.

    ``folders`` maps ``topic`` and ``stance`` to saved classifier folders (a model's ``artifacts/classifier``).
    """
    from pathlib import Path

    from train.pipeline import pinned_requirements
    from train.tagging import DEFAULT_TARGET, TaggerBundle

    return {
        "python_model": TaggerBundle(),
        "artifacts": folders,
        "code_paths": [str(Path(__file__).parent)],
        "input_example": pd.DataFrame(
            {"text": ["Both ministers signed a gas supply agreement."], "target": [DEFAULT_TARGET]}
        ),
        "pip_requirements": pinned_requirements(("torch", "transformers", "onnxruntime", "onnx")),
    }


def classifier_folder(model_uri: str, dst_path: str) -> str:
    """Download a logged tagger model and return its saved classifier folder."""
    from pathlib import Path

    local = mlflow.artifacts.download_artifacts(model_uri, dst_path=dst_path)
    return str(Path(local) / "artifacts" / "classifier")


def register_bundle() -> str | None:
    """Register topic + stance champions as one pyfunc ``tagger`` (alias ``champion``); None if one is missing."""
    import tempfile
    from pathlib import Path

    client = mlflow.MlflowClient()
    folders = {}
    with tempfile.TemporaryDirectory() as tmp:
        versions = {}
        for task in ("topic", "stance"):
            try:
                versions[task] = client.get_model_version_by_alias(registered_name(task), CHAMPION)
            except MlflowException:
                return None
            folders[task] = classifier_folder(f"models:/{registered_name(task)}@{CHAMPION}", str(Path(tmp) / task))
        with mlflow.start_run(
            run_name="tagger-bundle",
            experiment_id=tracking.ensure_experiment("tagger-bundle"),
            tags=tracking.process_tags(),
        ) as run:
            mlflow.set_tags({f"{task}_version": v.version for task, v in versions.items()})
            info = mlflow.pyfunc.log_model(name="model", **bundle_model_arguments(folders))
        version = mlflow.register_model(info.model_uri, BUNDLE)
        client.update_model_version(
            BUNDLE,
            version.version,
            description=f"topic v{versions['topic'].version} + stance v{versions['stance'].version}, "
            f"logged in run {run.info.run_id}",
        )
        try:
            former = client.get_model_version_by_alias(BUNDLE, CHAMPION)
            client.set_registered_model_alias(BUNDLE, PREVIOUS, former.version)
        except MlflowException:
            pass
        client.set_registered_model_alias(BUNDLE, CHAMPION, version.version)
        return version.version
