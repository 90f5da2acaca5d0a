"""``tagger sweep``: spaces checked before anything runs, shared studies, resumption, dead workers, best.yaml."""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import optuna
import pytest
import sqlalchemy
import yaml
from conftest import ROOT, run_main

from train.errors import TaggerError

CONFIG = ROOT / "configs/stance/tfidf_logreg.yaml"
QUICK = ["model.params.char_ngram_range=null", "split.folds=3", "evaluation.bootstrap_samples=0"]


def space_file(tmp_path: Path, params: dict, **extra) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({**extra, "params": params}), encoding="utf-8")
    return path


@pytest.fixture
def sweep_env(tmp_path, small_train):
    """Environment of a sweep process: its own MLflow store and Optuna storage in ``tmp_path``."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "TAGGER_HOME": str(tmp_path)}
    sets = [f"data.train={small_train}", *QUICK]
    return env, [arg for s in sets for arg in ("--set", s)]


def tagger(env, *args, **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "train.cli", *map(str, args)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def load_study(tmp_path: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'optuna.db'}")


def trial_runs(tmp_path: Path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    return mlflow.search_runs(experiment_names=["tagger-stance"], filter_string="tags.`tagger.sweep` = 'trial'")


@pytest.mark.parametrize(
    "params, extra, message",
    [
        (
            {"model.params.Cx": {"type": "float", "low": 0.1, "high": 1}},
            {},
            "unknown key 'model.params.Cx'; did you mean 'C'",
        ),
        ({"modle.params.C": {"type": "float", "low": 0.1, "high": 1}}, {}, "only model.* and decision.* keys"),
        ({"model.params.C": {"type": "float", "low": 2, "high": 1}}, {}, "low \\(2.0\\) is above high \\(1.0\\)"),
        ({"model.params.C": {"type": "float", "low": 0, "high": 1, "log": True}}, {}, "a log range needs low > 0"),
        ({"model.params.C": {"type": "gaussian", "low": 0, "high": 1}}, {}, "type must be float, int or categorical"),
        ({"model.params.min_df": {"type": "int", "low": 0, "high": 2}}, {}, "params.model.params.min_df = 0"),
        ({"data.train": {"type": "categorical", "choices": ["a.jsonl"]}}, {}, "only model.\\* and decision.\\* keys"),
        (
            {"model.params.C": {"type": "float", "low": 0.1, "high": 1}},
            {"objective": "cv/f1_macr_mean"},
            "did you mean 'cv/f1_macro_mean'",
        ),
    ],
)
def test_bad_spaces_are_one_line_errors_before_anything_exists(
    tmp_path, sweep_env, monkeypatch, capsys, params, extra, message
):
    env, sets = sweep_env
    monkeypatch.setenv("TAGGER_HOME", str(tmp_path))
    space = space_file(tmp_path, params, **extra)
    args = ["sweep", str(CONFIG), "--space", str(space), "--trials", "2", *sets]
    code, lines = run_main(monkeypatch, capsys, *args, store=env["MLFLOW_TRACKING_URI"])
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), lines
    assert re.search(message, lines[0]), lines[0]
    assert not (tmp_path / "optuna.db").exists() and not (tmp_path / "mlflow.db").exists()


def test_shipped_spaces_fit_their_configs():
    from train.config import load_config
    from train.training.space import check_space, load_space, resolve_objective

    for config, space in [
        ("configs/topic/tfidf_logreg.yaml", "configs/spaces/tfidf.yaml"),
        ("configs/stance/tfidf_svm.yaml", "configs/spaces/tfidf.yaml"),
        ("configs/topic/minilm_finetune.yaml", "configs/spaces/transformer.yaml"),
    ]:
        loaded = load_space(ROOT / space)
        check_space(loaded, load_config(ROOT / config), space)
        assert resolve_objective(load_config(ROOT / config), loaded, None) == ("cv/f1_macro_mean", "maximize")


@pytest.mark.slow
def test_two_sweep_processes_share_one_study_exactly(tmp_path, sweep_env):
    env, sets = sweep_env
    space = space_file(tmp_path, {"model.params.C": {"type": "float", "low": 0.1, "high": 10, "log": True}})
    args = ("sweep", CONFIG, "--space", space, "--trials", 5, "--study", "shared", *sets)
    procs = [tagger(env, *args) for _ in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    study = load_study(tmp_path, "shared")
    done = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len(done) == 5
    assert len({t.user_attrs["tagger.pid"] for t in done}) == 2  # both processes ran trials
    runs = trial_runs(tmp_path)
    assert sorted(runs["tags.optuna.trial"].astype(int)) == sorted(t.number for t in done)  # one run per trial
    assert runs["tags.mlflow.parentRunId"].nunique() == 1
    parent = mlflow.get_run(runs["tags.mlflow.parentRunId"].iloc[0])
    assert parent.data.tags["tagger.sweep"] == "parent" and parent.info.status == "FINISHED"
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(parent.info.run_id, "plots")}
    assert "plots/optimization_history.png" in artifacts


@pytest.mark.slow
def test_resumed_study_keeps_its_trials_and_best_config_reproduces(tmp_path, sweep_env, monkeypatch):
    from train.config import load_config
    from train.training.cv import cross_validate
    from train.training.sweep import SweepOptions, sweep

    env, sets = sweep_env
    for name in ("MLFLOW_TRACKING_URI", "TAGGER_HOME"):
        monkeypatch.setenv(name, env[name])
    space = space_file(
        tmp_path,
        {
            "model.params.C": {"type": "float", "low": 0.1, "high": 10, "log": True},
            "model.params.word_ngram_range": {"type": "categorical", "choices": [[1, 1], [1, 2]]},
            "decision.tune": {"type": "categorical", "choices": [True, False]},
        },
    )
    out = tmp_path / "best"
    overrides = tuple(sets[1::2])
    config = load_config(CONFIG, list(overrides))
    options = SweepOptions(str(space), 2, study="grow", out=out, overrides=overrides)
    first = sweep(config, config_path=str(CONFIG), options=options)
    before = {t.number: (t.params, t.value) for t in load_study(tmp_path, "grow").trials}
    with pytest.raises(TaggerError, match="was run with another space"):  # resuming needs the same space
        other = space_file(tmp_path / "other", {"model.params.C": {"type": "float", "low": 1, "high": 2}})
        sweep(config, config_path=str(CONFIG), options=SweepOptions(str(other), 4, study="grow", overrides=overrides))
    second = tagger(
        env, "sweep", CONFIG, "--space", space, "--study", "grow", "--out", out, "--trials", 4, "--jobs", 2, *sets
    )
    stdout, err = second.communicate(timeout=300)
    assert second.returncode == 0, err
    study = load_study(tmp_path, "grow")
    # two workers racing for the last slot may leave a FAILed trial marked surplus, by design; it never counts
    counted = [t for t in study.trials if not t.user_attrs.get("tagger.surplus")]
    surplus = [t for t in study.trials if t.user_attrs.get("tagger.surplus")]
    assert all(t.state == optuna.trial.TrialState.FAIL for t in surplus)
    assert len(counted) == 4 and {t.number: (t.params, t.value) for t in counted[:2]} == before
    runs = trial_runs(tmp_path)
    assert set(runs["tags.mlflow.parentRunId"]) == {first.parent_run_id}  # the same parent run
    assert "best config:" in stdout
    best = yaml.safe_load((out / "best.yaml").read_text(encoding="utf-8"))
    assert Path(best["extends"]) == CONFIG  # the study's folder is outside the project: an absolute path
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    run_id = cross_validate(load_config(out / "best.yaml", ["tracking.log_model=false"]), config_path=out / "best.yaml")
    assert mlflow.get_run(run_id).data.metrics["cv/f1_macro_mean"] == pytest.approx(study.best_value, abs=1e-9)


@pytest.mark.slow
def test_a_killed_sweep_is_resumed_and_its_dead_trial_rerun(tmp_path, sweep_env):
    env, sets = sweep_env
    space = space_file(tmp_path, {"model.params.C": {"type": "float", "low": 0.1, "high": 10, "log": True}})
    args = ("sweep", CONFIG, "--space", space, "--trials", 2, "--study", "killed", *sets)
    proc = tagger(env, *args, start_new_session=True)
    deadline = time.time() + 300  # generous: the first trial starts after the imports, slow on a loaded machine
    running = []
    while time.time() < deadline and not running and proc.poll() is None:
        time.sleep(0.2)
        if (tmp_path / "optuna.db").exists():
            try:
                trials = load_study(tmp_path, "killed").trials
                running = [t for t in trials if t.state.name == "RUNNING" and "tagger.pid" in t.user_attrs]
            except (KeyError, sqlalchemy.exc.SQLAlchemyError):  # no study yet, or the sweep is creating the schema
                continue
    assert running, "no trial started" + (f"; the sweep exited: {proc.communicate()[1]}" if proc.poll() else "")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    again = tagger(env, *args)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    study = load_study(tmp_path, "killed")
    assert study.trials[running[0].number].state.name == "FAIL"
    assert sum(t.state.name in ("COMPLETE", "PRUNED") for t in study.trials) == 2


def _open_at_once(url: str, ours: bool, barrier, results) -> None:
    """Open Optuna's storage on ``url`` when every process is ready: through ``open_storage`` or plain Optuna."""
    import optuna

    from train.training.sweep import open_storage

    barrier.wait()
    try:
        open_storage(url) if ours else optuna.storages.RDBStorage(url)
        results.put((ours, "ok"))
    except Exception as exc:  # noqa: BLE001 - the plain clients may lose the race; ours must not
        results.put((ours, f"{type(exc).__name__}: {exc}"))


@pytest.mark.slow
def test_a_sweep_opens_a_new_storage_while_other_optuna_clients_create_it(tmp_path):
    """Plain Optuna clients (a script, a dashboard) creating the schema at the same moment do not fail a sweep."""
    context = multiprocessing.get_context("forkserver")  # each worker forks from one process that imported
    context.set_forkserver_preload([_open_at_once.__module__, "train.training.sweep"])  # once (spawn: 6 times)
    for attempt in range(2):  # without the retry, a sweep lost this race at least once in 2 on 2 cores
        url = f"sqlite:///{tmp_path / f'race{attempt}.db'}"
        barrier, results = context.Barrier(6), context.Queue()
        workers = [context.Process(target=_open_at_once, args=(url, i % 2 == 0, barrier, results)) for i in range(6)]
        for worker in workers:
            worker.start()
        outcomes = [results.get(timeout=120) for _ in workers]
        for worker in workers:
            worker.join(timeout=60)
        assert all(outcome == "ok" for ours, outcome in outcomes if ours), outcomes
