"""Promote the best finished run of a task to the MLflow Model Registry as its ``champion``.

The winner is the run with the best metric (highest; lowest for losses, time and size; ties: higher
dev macro F1, then newer). It is registered as ``tagger-<task>``; the alias ``champion`` moves to the
new version and ``previous`` to the former champion. Why it won (its metric values and the
runner-up's) goes into the version's description and tags.

Registry changes are serialised per store (``registry_lock``) and resumable: a run and a pair of
topic and stance versions are registered once, and what a promote killed midway left is finished
or removed by the next one.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import mlflow
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from train.domain import BUNDLE, BUNDLE_EXPERIMENT, CHAMPION, PREVIOUS, experiment_name, registered_name
from train.errors import TaggerError
from train.tracking import store
from train.tracking.packaging import bundle_model_arguments
from train.tracking.runs import (
    CV,
    SCORE_KIND,
    VALIDATION_METRIC,
    comparable_kind,
    config_keys,
    dev_only,
    finished_runs,
    mark_ties,
    mixed_field,
    rank,
    rank_by_kind,
    tie_floor,
)

log = logging.getLogger("tagger")


@dataclass
class Choice:
    task: str
    metric: str
    winner: pd.Series
    runner_up: pd.Series | None
    significance: str = ""
    kind: str | None = None  # the kind of validation score compared (cv, dev); None for an explicit metric
    tied: pd.DataFrame | None = None  # the runs within the winner's noise (``runs.mark_ties``)

    def tie_sentence(self) -> str:
        """Which runs are tied with the winner, within what, and the rule that chose among them."""
        if self.tied is None or self.tied.empty:
            return ""
        column = f"metrics.{self.metric}"
        names = ", ".join(
            f"run {run['run_id']} ({run.get('tags.mlflow.runName')}, {run[column]:.4f})"
            for _, run in self.tied.iterrows()
        )
        within = "2 fold stds of the winner's CV mean" if self.kind == CV else "the winner's dev bootstrap interval"
        return (
            f"Tied with {names}: within {within} (scores >= {tie_floor(self.winner):.4f}), so the difference is noise; "
            "chose by the tie-break: the higher score, then the higher dev f1_macro, then the newer run."
        )

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

        kind = {CV: " (CV means, among cross-validated runs)", "dev": " (dev scores, among runs without CV)"}
        text = f"Best {self.task} run by {self.metric}{kind.get(self.kind, '')}: {line(self.winner)}."
        if self.runner_up is not None:
            text += f" Runner-up: {line(self.runner_up)}."
        if self.tie_sentence():
            text += f" {self.tie_sentence()}"
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
    """The best finished run of ``task`` that logged a model, by ``metric``, with a paired test of its
    margin over the runner-up.

    By the validation score (the default), like with like: CV means among cross-validated runs when any
    run is, else dev scores. A field where other runs have only dev scores (and no CV run of their
    config) is refused with how to make it comparable (``promote --cv``). Runs within the winner's
    noise are reported as ties. An explicit ``metric`` (a test set's) ranks every run that has it.
    """
    runs = finished_runs(experiment_name(task), task)
    column = f"metrics.{metric}"
    if runs.empty or column not in runs.columns:
        raise TaggerError(f"no finished {task} run logged the metric '{metric}'")
    runs = runs[runs[column].notna()]
    if runs.empty:
        raise TaggerError(f"no finished {task} run with a logged model has the metric '{metric}'")
    if metric != VALIDATION_METRIC:
        runs = rank(runs, metric)
        runner_up = runs.iloc[1] if len(runs) > 1 else None
        return Choice(task, metric, runs.iloc[0], runner_up, significance(runs.iloc[0], runner_up))
    kind = comparable_kind(runs)
    if kind == CV and len(dev_only(runs)):
        raise TaggerError(mixed_field(runs, task))
    runs = rank_by_kind(runs)
    runs = runs[runs[SCORE_KIND] == kind]
    tied = runs[mark_ties(runs) == "tie"]
    runner_up = runs.iloc[1] if len(runs) > 1 else None
    return Choice(task, metric, runs.iloc[0], runner_up, significance(runs.iloc[0], runner_up), kind, tied)


def cross_validate_dev_only(task: str, folds: int | None = None) -> list[str]:
    """``tagger promote --cv``: cross-validate the config of every run of ``task`` that has only a dev
    score (one CV per config; each run logged its resolved ``config.yaml``), so that every candidate
    has a CV score; the new CV run ids."""
    import tempfile
    from pathlib import Path

    from train.config import load_config
    from train.training.cv import cross_validate

    runs = finished_runs(experiment_name(task), task)
    pending = dev_only(runs) if not runs.empty else runs
    ids = []
    for _, run in pending.loc[~config_keys(pending).duplicated()].iterrows():
        name = run.get("tags.mlflow.runName")
        with tempfile.TemporaryDirectory() as tmp:
            try:
                local = mlflow.artifacts.download_artifacts(
                    run_id=run["run_id"], artifact_path="config.yaml", dst_path=tmp
                )
            except MlflowException:
                raise TaggerError(
                    f"run {run['run_id']} ({name}) logged no config.yaml to cross-validate; "
                    f"run `tagger cv` on its config, or rank by one metric with --metric dev/f1_macro"
                ) from None
            config = load_config(Path(local))
        log.info("cross-validating the config of run %s (%s), which has only a dev score", run["run_id"], name)
        ids.append(cross_validate(config, config_path=run.get("tags.config_file") or None, folds=folds))
    return ids


# --- registration that a later promote can finish or undo ------------------------------------------------
# Every registry change runs under one lock per store (``registry_lock``). A version is created with
# PROMOTE_TAG = "pending", the process tags of its promote and the champion it replaces, all in the
# same transaction; it is marked "done" once its aliases are set. A pending version whose promote died
# (``kill -9``) is finished by the next promote when it holds what that promote wants, else deleted.
PROMOTE_TAG, REPLACES_TAG = "tagger.promote", "tagger.replaces"
PENDING, DONE = "pending", "done"
LOCK_SECONDS = 1800  # packaging the combined model downloads and logs both models under the lock


@contextmanager
def registry_lock() -> Iterator[bool]:
    """Serialise registry changes of every process on this store; yields whether the lock is shared.

    SQLite: a file lock beside the database (``mlflow.db.registry.lock``); PostgreSQL: an advisory
    lock. A tracking server over HTTP cannot be locked from here, so promote one task at a time there.
    """
    uri = mlflow.get_registry_uri()
    with store.storage_lock(uri, "registry", timeout=LOCK_SECONDS):
        yield store.lock_is_shared(uri)


def _versions(client: mlflow.MlflowClient, name: str) -> list[ModelVersion]:
    """Every version of registered model ``name``, oldest first (none when it does not exist)."""
    found = client.search_model_versions(f"name = '{name}'")
    return sorted(found, key=lambda v: int(v.version))


def _alias(client: mlflow.MlflowClient, name: str, alias: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _left_by_dead_promote(version: ModelVersion, shared_lock: bool) -> bool:
    """Whether ``version`` is pending and the promote that created it is gone."""
    tags = version.tags
    if tags.get(PROMOTE_TAG) != PENDING:
        return False
    if tags.get(store.HOST_TAG) == socket.gethostname():
        return not store.process_alive(tags.get(store.PID_TAG), tags.get(store.STARTED_TAG))
    return shared_lock  # another host: under a shared lock, no other promote is under way


def _register(model_uri: str, name: str, tags: dict[str, str], replaces: ModelVersion | None) -> str:
    """A new version of ``name``, created pending (with ``tags``) in one transaction; its number."""
    pending = {**tags, PROMOTE_TAG: PENDING, **store.process_tags()}
    if replaces is not None:
        pending[REPLACES_TAG] = str(replaces.version)
    return mlflow.register_model(model_uri, name, tags=pending).version


def _finish(
    client: mlflow.MlflowClient,
    name: str,
    version: str,
    replaces: str | None,
    description: str | None = None,
    tags: dict[str, str] | None = None,
) -> None:
    """Describe and tag ``version``, make it champion, ``replaces`` previous, and mark it done (idempotent)."""
    if description is not None:
        client.update_model_version(name, version, description=description)
    for key, value in (tags or {}).items():
        client.set_model_version_tag(name, version, key, value)
    client.set_registered_model_alias(name, CHAMPION, version)
    if replaces and str(replaces) != str(version):
        client.set_registered_model_alias(name, PREVIOUS, replaces)
    client.set_model_version_tag(name, version, PROMOTE_TAG, DONE)


def _settle_dead_promotes(client: mlflow.MlflowClient, name: str, shared_lock: bool, wanted) -> None:
    """Finish or undo what promotes that died left in ``name``.

    A pending version that already became champion gets its ``previous`` and is marked done; one that
    ``wanted(version)`` accepts is left for the caller to finish; any other one is deleted.
    """
    champion = _alias(client, name, CHAMPION)  # (search results carry no aliases)
    for version in _versions(client, name):
        if not _left_by_dead_promote(version, shared_lock):
            continue
        if champion is not None and str(champion.version) == str(version.version):
            _finish(client, name, version.version, version.tags.get(REPLACES_TAG))
            log.warning("%s v%s: finished the promotion of a process that died", name, version.version)
        elif not wanted(version):
            client.delete_model_version(name, version.version)
            log.warning("%s v%s: removed, its promotion died before it became champion", name, version.version)


def _ensure_registered_model(client: mlflow.MlflowClient, name: str, description: str) -> None:
    try:
        client.get_registered_model(name)
    except MlflowException:
        store.retry_on_conflict(lambda: client.create_registered_model(name, description=description))


def promote(task: str, metric: str = VALIDATION_METRIC, dry_run: bool = False) -> tuple[Choice, str | None, bool]:
    """Register the chosen run and move the aliases.

    Returns the choice, the champion version (None on a dry run) and whether it changed: when the
    chosen run already is the champion, nothing is registered. A run has at most one version: one
    registered before (a former champion, or left by a promote that died) is reused.
    """
    choice = choose(task, metric)
    if dry_run:
        return choice, None, False
    client = mlflow.MlflowClient()
    name = registered_name(task)
    run_id = choice.winner["run_id"]
    with registry_lock() as shared_lock:
        _ensure_registered_model(client, name, f"tagger {task} model; alias '{CHAMPION}' is served.")
        _settle_dead_promotes(client, name, shared_lock, lambda v: v.run_id == run_id)
        former = _alias(client, name, CHAMPION)
        if former is not None and former.run_id == run_id:
            return choice, former.version, False
        tags = {
            "metric": metric,
            "metric_value": f"{choice.winner[f'metrics.{metric}']:.6f}",
            **({"score_kind": choice.kind} if choice.kind else {}),
            **({"tied_with": ",".join(choice.tied["run_id"])} if choice.tied is not None and len(choice.tied) else {}),
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
        existing = [v.version for v in _versions(client, name) if v.run_id == run_id]
        version = existing[0] if existing else _register(f"runs:/{run_id}/model", name, tags, former)
        _finish(client, name, version, former.version if former else None, choice.describe(), tags)
    return choice, version, True


def rollback(task: str, dry_run: bool = False) -> tuple[str, str]:
    """Swap ``champion`` and ``previous`` of ``tagger-<task>``; return (new champion, new previous) versions."""
    store.setup()
    client = mlflow.MlflowClient()
    name = registered_name(task)
    with registry_lock():
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
    A pair of topic and stance versions is registered once: the version that already holds it (tags
    ``topic_version`` and ``stance_version``) becomes champion again, and a model packaged by a promote
    that died before registering it is reused. What dead promotes left in the task models is settled
    first. The packaging run is logged in ``tagger-bundle``.
    """
    client = mlflow.MlflowClient()
    with registry_lock() as shared_lock:
        versions = {}
        for task in ("topic", "stance"):
            _settle_dead_promotes(client, registered_name(task), shared_lock, lambda version: False)
            champion = _alias(client, registered_name(task), CHAMPION)
            if champion is None:
                return None
            versions[task] = str(champion.version)
        wanted = {f"{task}_version": version for task, version in versions.items()}

        def holds_wanted(version: ModelVersion) -> bool:
            return all(version.tags.get(key) == value for key, value in wanted.items())

        _settle_dead_promotes(client, BUNDLE, shared_lock, holds_wanted)
        current = _alias(client, BUNDLE, CHAMPION)
        if current is not None and holds_wanted(current):
            return current.version, False
        existing = [v for v in _versions(client, BUNDLE) if holds_wanted(v)]
        if existing:
            version, run_id = existing[0].version, existing[0].run_id
        else:
            model_uri, run_id = _packaged(client, wanted) or _package(versions, wanted)
            version = _register(model_uri, BUNDLE, wanted, current)
        description = f"topic v{versions['topic']} + stance v{versions['stance']}, logged in run {run_id}"
        _finish(client, BUNDLE, version, current.version if current else None, description)
    return version, True


def _packaged(client: mlflow.MlflowClient, wanted: dict[str, str]) -> tuple[str, str] | None:
    """A complete combined model of these versions already logged (by a promote that died before
    registering it): its URI and run id."""
    from mlflow.entities import LoggedModelStatus

    experiment = client.get_experiment_by_name(BUNDLE_EXPERIMENT)
    if experiment is None:
        return None
    match = " and ".join(f"tags.`{key}` = '{value}'" for key, value in wanted.items())
    for run in client.search_runs([experiment.experiment_id], match, order_by=["attributes.start_time ASC"]):
        models = client.search_logged_models(
            [experiment.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'"
        )
        for model in models:
            if model.status == LoggedModelStatus.READY:
                return f"models:/{model.model_id}", run.info.run_id
    return None


def _package(versions: dict[str, str], wanted: dict[str, str]) -> tuple[str, str]:
    """Log the champions' classifiers as one pyfunc in a ``tagger-bundle`` run; its URI and run id."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        folders = {
            task: classifier_folder(f"models:/{registered_name(task)}/{version}", str(Path(tmp) / task))
            for task, version in versions.items()
        }
        with mlflow.start_run(
            run_name="tagger-bundle",
            experiment_id=store.ensure_experiment(BUNDLE_EXPERIMENT),
            tags={**store.process_tags(), **wanted},
        ) as run:
            info = mlflow.pyfunc.log_model(name="model", **bundle_model_arguments(folders))
    return info.model_uri, run.info.run_id
