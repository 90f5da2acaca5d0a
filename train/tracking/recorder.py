"""The one seam between the workflows (train, cv, sweep) and experiment tracking.

A ``Recorder`` opens runs; a ``Run`` takes params, metrics (with a step), tags, a note, artifacts
(files, folders and tables), dataset inputs and the model. ``Recorder.run`` is the one place a run is closed:
FINISHED when its block ends, FAILED on an error, KILLED when the process is interrupted, and its
work folder removed. ``report`` sends metrics to the innermost open run, whatever the recorder, so
a model family reports learning curves without knowing how they are tracked.

``train.tracking.mlflow_recorder.MlflowRecorder`` is the implementation the commands use; this module
imports no tracking library.
"""

from __future__ import annotations

import contextvars
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

FINISHED, FAILED, KILLED = "FINISHED", "FAILED", "KILLED"

_CURRENT: contextvars.ContextVar[Run | None] = contextvars.ContextVar("tagger_current_run", default=None)


class Run(ABC):
    """One tracked run: an id, a work folder (top-level runs) and what is logged to it."""

    def __init__(self, recorder: Recorder, run_id: str, workdir: Path | None = None):
        self.recorder = recorder
        self.id = run_id
        self.workdir = workdir  # a fresh folder for the run's files, removed when the run ends

    @abstractmethod
    def log_params(self, params: Mapping[str, Any]) -> None: ...

    @abstractmethod
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...

    @abstractmethod
    def set_tags(self, tags: Mapping[str, str]) -> None: ...

    @abstractmethod
    def set_note(self, text: str) -> None:
        """The run's description (Markdown), shown with it."""

    @abstractmethod
    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        """A file, or a folder's files, under ``folder`` (the run's root when None)."""

    def log_table(self, frame: Any, artifact_file: str) -> None:
        """A table (a DataFrame) as the JSON artifact ``artifact_file`` (``{"columns": [...], "data": [...]}``)."""
        import json

        folder = Path(tempfile.mkdtemp(prefix="tagger-table-"))
        try:
            path = folder / Path(artifact_file).name
            table = frame.to_dict(orient="split")
            path.write_text(json.dumps({"columns": table["columns"], "data": table["data"]}), encoding="utf-8")
            self.log_artifact(path, str(Path(artifact_file).parent) if "/" in artifact_file else None)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    @abstractmethod
    def log_dataset(self, frame: Any, *, source: str, name: str, context: str) -> None:
        """A data set the run used (``context``: train, dev, eval)."""

    @abstractmethod
    def log_model(self, model: Any, example: Any, workdir: Path) -> None:
        """The trained classifier, with an input example; ``workdir`` holds its files meanwhile."""

    @abstractmethod
    def _terminate(self, status: str) -> None: ...

    def end(self, status: str = FINISHED) -> None:
        """Close the run with ``status`` and remove its work folder."""
        try:
            self._terminate(status)
        finally:
            if self.workdir is not None:
                shutil.rmtree(self.workdir, ignore_errors=True)

    def child(self, name: str, tags: Mapping[str, str] | None = None):
        """A nested run under this one (a context manager, closed like any run)."""
        return self.recorder.run(name, tags, parent=self.id)


class Recorder(ABC):
    """Where runs go. Picklable, so a sweep's spawned workers record to the same place."""

    name = "tracking"  # named in log lines ("MLflow run ...")

    def open(self) -> str:
        """Connect (once per process) and return where runs go, for the log."""
        return self.name

    @abstractmethod
    def _create(
        self, name: str, tags: Mapping[str, str], parent: str | None, workdir: Path | None, current: bool
    ) -> Run:
        """A new RUNNING run; ``current``: the process's active run until it ends (else only by id)."""

    @abstractmethod
    def attach(self, run_id: str) -> Run | None:
        """A handle on an existing run (None when the store has none with that id); its status is unchanged."""

    @abstractmethod
    def resume(self, run_id: str) -> Run | None:
        """An existing run set RUNNING again, owned by this process (None when the store has none)."""

    def _new(self, name: str, tags: Mapping[str, str] | None, parent: str | None, current: bool) -> Run:
        """A new run; a top-level one gets a work folder, removed again if the run cannot be created."""
        self.open()
        workdir = None if parent else Path(tempfile.mkdtemp(prefix="tagger-run-"))
        try:
            return self._create(name, dict(tags or {}), parent, workdir, current=current)
        except BaseException:
            if workdir is not None:
                shutil.rmtree(workdir, ignore_errors=True)
            raise

    def start(self, name: str, tags: Mapping[str, str] | None = None, *, parent: str | None = None) -> Run:
        """A run that outlives this call (a sweep's parent, ended by its last worker); end it with ``Run.end``."""
        return self._new(name, tags, parent, current=False)

    @contextmanager
    def run(self, name: str, tags: Mapping[str, str] | None = None, *, parent: str | None = None) -> Iterator[Run]:
        """A run for the block: FINISHED at its end, FAILED on an error, KILLED on an interrupt.

        A top-level run gets a work folder (``Run.workdir``), removed when it ends; ``parent`` makes it
        a nested run of that run (which may live in another process).
        """
        run = self._new(name, tags, parent, current=True)
        token = _CURRENT.set(run)
        try:
            yield run
        except (KeyboardInterrupt, SystemExit):
            run.end(KILLED)
            raise
        except BaseException:
            run.end(FAILED)
            raise
        else:
            run.end(FINISHED)
        finally:
            _CURRENT.reset(token)


def current_run() -> Run | None:
    """The innermost run open in this process (by ``Recorder.run``), if any."""
    return _CURRENT.get()


def report(metrics: Mapping[str, float], step: int | None = None) -> None:
    """Metrics (a learning curve's points) for the innermost open run; nothing when none is open."""
    run = _CURRENT.get()
    if run is not None and metrics:
        run.log_metrics(metrics, step=step)
