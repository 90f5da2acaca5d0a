"""The tracking seam: the workflows record through any ``Recorder``; a run is closed in one place.

``MemoryRecorder`` is a second implementation of the interface, kept in memory; the MLflow recorder's
behaviour is covered by the workflow tests against real stores (test_train_e2e, test_cv, test_sweep).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from conftest import ROOT

from train.tracking.recorder import FAILED, FINISHED, KILLED, Recorder, Run, current_run, report

TOPIC = ROOT / "configs/topic/tfidf_logreg.yaml"
QUICK = ["evaluation.bootstrap_samples=0", "evaluation.sets=[]", "model.params.char_ngram_range=null"]


class MemoryRun(Run):
    def __init__(self, recorder, run_id, workdir, name, tags, parent):
        super().__init__(recorder, run_id, workdir)
        self.name, self.tags, self.parent = name, dict(tags), parent
        self.params: dict[str, str] = {}
        self.metrics: dict[str, list[tuple[int, float]]] = {}
        self.artifacts: dict[str, bytes] = {}
        self.datasets: list[tuple[str, str, int]] = []
        self.models: list = []
        self.note = ""
        self.status = "RUNNING"

    def log_params(self, params):
        self.params.update({k: str(v) for k, v in params.items()})

    def log_metrics(self, metrics, step=None):
        for name, value in metrics.items():
            self.metrics.setdefault(name, []).append((step or 0, float(value)))

    def set_tags(self, tags):
        self.tags.update(tags)

    def set_note(self, text):
        self.note = text

    def log_artifact(self, path, folder=None):
        path = Path(path)
        files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
        for file in files:
            relative = file.relative_to(path).as_posix() if path.is_dir() else file.name
            self.artifacts[f"{folder}/{relative}" if folder else relative] = file.read_bytes()

    def log_dataset(self, frame, *, source, name, context):
        self.datasets.append((name, context, len(frame)))

    def log_model(self, model, example, workdir):
        assert workdir == self.workdir and len(example)
        self.models.append(model)

    def _terminate(self, status):
        self.status = status


class MemoryRecorder(Recorder):
    name = "memory"

    def __init__(self):
        self.runs: dict[str, MemoryRun] = {}

    def _create(self, name, tags, parent, workdir, current):
        run = MemoryRun(self, uuid.uuid4().hex, workdir, name, tags, parent)
        self.runs[run.id] = run
        return run

    def attach(self, run_id):
        return self.runs.get(run_id)

    def resume(self, run_id):
        run = self.runs.get(run_id)
        if run is not None:
            run.status = "RUNNING"
        return run

    def children(self, parent: str) -> list[MemoryRun]:
        return [run for run in self.runs.values() if run.parent == parent]


@pytest.fixture
def no_mlflow_store(tmp_path, monkeypatch):
    """Point MLflow at a store in ``tmp_path``; the test checks that it was never created."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("TAGGER_HOME", str(tmp_path))
    yield tmp_path / "mlflow.db"


def test_a_run_is_closed_once_finished_failed_or_killed_and_its_folder_removed():
    recorder = MemoryRecorder()
    with recorder.run("ok", {"a": "1"}) as run:
        assert run.workdir.is_dir() and current_run() is run
        with run.child("nested") as child:
            assert child.workdir is None and child.parent == run.id and current_run() is child
            report({"train/loss": 0.5}, step=3)  # what a model family's training callback does
        report({"train/loss": 0.25}, step=4)
    assert (run.status, child.status, current_run()) == (FINISHED, FINISHED, None) and not run.workdir.exists()
    assert child.metrics == {"train/loss": [(3, 0.5)]} and run.metrics == {"train/loss": [(4, 0.25)]}
    report({"train/loss": 1.0})  # no open run: nothing, no error
    for error, status in ((ValueError("bad data"), FAILED), (KeyboardInterrupt(), KILLED)):
        with pytest.raises(type(error)), recorder.run("broken") as broken:
            raise error
        assert broken.status == status and not broken.workdir.exists() and current_run() is None


def test_train_records_through_any_recorder(small_train, no_mlflow_store):
    from train.config import load_config
    from train.training.pipeline import train

    recorder = MemoryRecorder()
    config = load_config(TOPIC, [f"data.train={small_train}", *QUICK])
    run_id = train(config, recorder, config_path=TOPIC)
    run = recorder.runs[run_id]
    assert run.status == FINISHED and run.name.startswith("tfidf_logreg-") and not run.workdir.exists()
    assert run.tags["model_family"] == "tfidf_logreg" and run.tags["config_file"] == str(TOPIC)
    assert run.params["model.family"] == "tfidf_logreg" and "dev/f1_macro" in run.metrics
    assert {"summary.json", "config.yaml", "environment.json"} <= set(run.artifacts)
    assert any(name.startswith("reports/") for name in run.artifacts)
    # headline metrics only; the per-label figures are a table (and in the set's metrics JSON)
    assert set(run.metrics) >= {"dev/f1_macro", "dev/f1_micro", "dev/hamming_loss"}
    assert not [name for name in run.metrics if "security" in name or "subset_accuracy" in name]
    table = json.loads(run.artifacts["reports/dev_per_label.json"])
    assert table["columns"] == ["label", "precision", "recall", "f1", "support"]
    assert [row[0] for row in table["data"]] == config.task.labels
    assert [context for _, context, _ in run.datasets] == ["train", "dev"]
    assert len(run.models) == 1 and run.models[0].labels == config.task.labels
    assert "tfidf_logreg" in run.note and "thresholds" in run.tags
    assert not no_mlflow_store.exists()


def test_cv_records_a_parent_and_fold_children_through_any_recorder(small_train, no_mlflow_store):
    from train.config import load_config
    from train.training.cv import cross_validate

    recorder = MemoryRecorder()
    config = load_config(TOPIC, [f"data.train={small_train}", *QUICK, "tracking.log_model=false"])
    parent_id = cross_validate(config, recorder, config_path=TOPIC, folds=3)
    parent = recorder.runs[parent_id]
    folds = recorder.children(parent_id)
    assert parent.status == FINISHED and parent.tags["tagger.cv"] == "parent" and parent.params["cv.folds"] == "3"
    assert sorted(run.tags["tagger.cv_fold"] for run in folds) == ["0.0", "0.1", "0.2"]
    assert sorted(run.name for run in folds) == ["fold 1/3", "fold 2/3", "fold 3/3"]  # as the log says
    mean, std = parent.metrics["cv/f1_macro_mean"][0][1], parent.metrics["cv/f1_macro_std"][0][1]
    assert f"f1_macro {mean:.3f} ± {std:.3f}" in parent.note
    assert not [name for run in (parent, *folds) for name in run.metrics if "security" in name]
    assert all(run.status == FINISHED and "validation/f1_macro" in run.metrics for run in folds)
    assert "cv/f1_macro_mean" in parent.metrics and parent.models == []
    assert {"config.yaml", "cv_summary.json", "oof_predictions.csv"} <= set(parent.artifacts)
    assert not no_mlflow_store.exists()


@pytest.mark.slow  # two cross-validated trials (about 5 s)
def test_sweep_records_a_parent_and_trial_runs_through_any_recorder(small_train, no_mlflow_store, tmp_path):
    import yaml

    from train.config import load_config
    from train.training.sweep import SweepOptions, sweep

    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"params": {"model.params.C": {"type": "float", "low": 0.5, "high": 2}}}))
    recorder = MemoryRecorder()
    config = load_config(TOPIC, [f"data.train={small_train}", *QUICK, "split.folds=3"])
    options = SweepOptions(space, 2, storage=f"sqlite:///{tmp_path / 'optuna.db'}", study="mem", out=tmp_path / "best")
    result = sweep(config, recorder, options=options)  # a config from no file: best.yaml holds all of it
    parent = recorder.runs[result.parent_run_id]
    trials = recorder.children(parent.id)
    assert parent.status == FINISHED and parent.tags["tagger.sweep"] == "parent" and parent.name == "sweep mem"
    assert sorted(run.tags["optuna.trial"] for run in trials) == ["0", "1"]
    assert all(run.status == FINISHED and run.tags["tagger.sweep"] == "trial" for run in trials)
    assert {"config.yaml", "space.yaml", "best.yaml", "trials.csv"} <= set(parent.artifacts)
    assert parent.metrics["best_value"] == [(2, pytest.approx(result.best_value))]
    best = load_config(result.best_config)
    assert best.model.params["C"] == pytest.approx(result.best_params["model.params.C"])
    assert best.data.train == config.data.train and "extends" not in yaml.safe_load(result.best_config.read_text())
    assert not no_mlflow_store.exists() and not parent.workdir.exists()
