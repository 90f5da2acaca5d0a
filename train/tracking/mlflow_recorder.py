"""``MlflowRecorder``: the workflows' runs in an MLflow tracking store (the one ``Recorder`` the commands use).

Store set-up, stale-run marking, the owning process's tags (``store.process_tags``) and retries of
concurrent dataset logging live here and in ``store``; the workflows only see ``Recorder`` and ``Run``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param, RunTag

from train.tracking import store
from train.tracking.recorder import Recorder, Run

PARENT_TAG, NOTE_TAG, GIT_COMMIT_TAG = "mlflow.parentRunId", "mlflow.note.content", "mlflow.source.git.commit"


class MlflowRun(Run):
    """A run in the store; logs through MLflow's active run while it is the active one, else by id."""

    def _active(self) -> bool:
        active = mlflow.active_run()
        return active is not None and active.info.run_id == self.id

    def log_params(self, params: Mapping[str, Any]) -> None:
        if self._active():
            mlflow.log_params(dict(params))
        else:
            mlflow.MlflowClient().log_batch(self.id, params=[Param(k, str(v)) for k, v in params.items()])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if self._active():
            mlflow.log_metrics(dict(metrics), step=step)
        else:
            stamp = int(time.time() * 1000)
            values = [Metric(k, float(v), stamp, step or 0) for k, v in metrics.items()]
            mlflow.MlflowClient().log_batch(self.id, metrics=values)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        if self._active():
            mlflow.set_tags(dict(tags))
        else:
            mlflow.MlflowClient().log_batch(self.id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def set_note(self, text: str) -> None:
        self.set_tags({NOTE_TAG: text})

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        path = Path(path)
        if self._active():
            (mlflow.log_artifacts if path.is_dir() else mlflow.log_artifact)(str(path), folder)
        else:
            client = mlflow.MlflowClient()
            (client.log_artifacts if path.is_dir() else client.log_artifact)(self.id, str(path), folder)

    def log_table(self, frame: Any, artifact_file: str) -> None:
        # MLflow's own table artifact: the UI lists it among the run's tables (tag mlflow.loggedArtifacts)
        if self._active():
            mlflow.log_table(frame, artifact_file)
        else:
            mlflow.MlflowClient().log_table(self.id, frame, artifact_file)

    def log_dataset(self, frame: Any, *, source: str, name: str, context: str) -> None:
        self._require_active("a dataset")
        dataset = mlflow.data.from_pandas(frame, source=source, name=name)
        # runs started together may log the same new dataset at once; the loser retries and reuses it
        store.retry_on_conflict(lambda: mlflow.log_input(dataset, context=context))

    def log_model(self, model: Any, example: Any, workdir: Path) -> None:
        from train.tracking.packaging import log_classifier

        self._require_active("a model")
        log_classifier(model, example, workdir)

    def _require_active(self, what: str) -> None:
        if not self._active():
            raise RuntimeError(f"{what} is logged inside 'with recorder.run(...)' (run {self.id} is not active)")

    def _terminate(self, status: str) -> None:
        if self._active():
            mlflow.end_run(status)
        else:
            mlflow.MlflowClient().set_terminated(self.id, status)


class MlflowRecorder(Recorder):
    """Runs in the MLflow store at ``uri`` (None: ``MLFLOW_TRACKING_URI``, else the embedded store), in ``experiment``.

    Nothing is touched until the first run starts (``open``), so a user error found before a run leaves
    no store behind. ``open`` also marks KILLED the runs of dead processes on this host.
    """

    name = "MLflow"

    def __init__(self, uri: str | None = None, experiment: str | None = None):
        self.uri = uri
        self.experiment = experiment
        self._opened = False

    @classmethod
    def for_config(cls, config) -> MlflowRecorder:
        """The recorder of a config's ``tracking`` settings."""
        return cls(config.tracking.uri, config.experiment_name)

    def __getstate__(self) -> dict:  # a spawned worker connects again (MLflow's settings are per process)
        return {"uri": self.uri, "experiment": self.experiment, "_opened": False}

    def open(self) -> str:
        if not self._opened:
            self.uri = store.setup(self.uri, self.experiment)
            store.mark_stale_runs()
            self._opened = True
        return self.uri

    def _create(
        self, name: str, tags: Mapping[str, str], parent: str | None, workdir: Path | None, current: bool
    ) -> Run:
        tags = {**tags, **store.process_tags(workdir)}
        if "git_commit" in tags:
            tags.setdefault(GIT_COMMIT_TAG, tags["git_commit"])
        if parent:
            tags[PARENT_TAG] = parent
        if current:
            run = mlflow.start_run(run_name=name, tags=tags, nested=mlflow.active_run() is not None)
        else:
            experiment = mlflow.get_experiment_by_name(self.experiment or "Default")
            run = mlflow.MlflowClient().create_run(experiment.experiment_id, tags={**tags, "mlflow.runName": name})
        return MlflowRun(self, run.info.run_id, workdir)

    def attach(self, run_id: str) -> Run | None:
        self.open()
        try:
            mlflow.MlflowClient().get_run(run_id)
        except mlflow.exceptions.MlflowException:
            return None
        return MlflowRun(self, run_id)

    def resume(self, run_id: str) -> Run | None:
        import tempfile

        run = self.attach(run_id)
        if run is None:
            return None
        run.workdir = Path(tempfile.mkdtemp(prefix="tagger-run-"))
        client = mlflow.MlflowClient()
        client.update_run(run_id, status="RUNNING")
        for key, value in store.process_tags(run.workdir).items():
            client.set_tag(run_id, key, value)
        return run
