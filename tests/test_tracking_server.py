"""Against a real tracking stack: PostgreSQL and ``mlflow server`` started by ``scripts/tracking_server.sh``.

Skipped with the reason where PostgreSQL is not installed (``make test`` installs it through ``make services``).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import httpx
import mlflow
import pytest
from conftest import ROOT, free_port, invoke, read_jsonl, wait_ready, write_jsonl

SCRIPT = ROOT / "scripts" / "tracking_server.sh"
QUICK = ["--set", "evaluation.bootstrap_samples=0", "--set", "model.params.char_ngram_range=null"]

pytestmark = [pytest.mark.services, pytest.mark.slow]


class Stack:
    """The tracking stack in a throw-away folder on free ports."""

    def __init__(self, folder):
        self.env = {
            **os.environ,
            "TAGGER_SERVER_DIR": str(folder),
            "TAGGER_PG_PORT": str(free_port()),
            "TAGGER_MLFLOW_PORT": str(free_port()),
            "TAGGER_MLFLOW": str(ROOT / ".venv" / "bin" / "mlflow") if (ROOT / ".venv").exists() else "mlflow",
        }
        self.uri = f"http://127.0.0.1:{self.env['TAGGER_MLFLOW_PORT']}"

    def run(self, command: str) -> str:
        done = subprocess.run(["bash", str(SCRIPT), command], env=self.env, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    if not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        pytest.skip("PostgreSQL is not installed; run 'make services' (apt-get, as root)")
    if os.geteuid() == 0 and not shutil.which("runuser"):
        pytest.skip("runuser is missing: PostgreSQL cannot be started as a non-root user")
    # not under pytest's private temporary root: PostgreSQL runs as another user, who must reach the folder
    stack = Stack(tempfile.mkdtemp(prefix="tagger-tracking-server-"))
    out = stack.run("start")
    assert f"export MLFLOW_TRACKING_URI={stack.uri}" in out
    yield stack
    stack.run("clean")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rows = read_jsonl(ROOT / "data/train/news_sentences.jsonl")[::6]
    return write_jsonl(tmp_path_factory.mktemp("server-data") / "train.jsonl", rows)


def tagger(stack: Stack, home, *args, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "train.cli", *map(str, args)],
        env={**os.environ, "MLFLOW_TRACKING_URI": stack.uri, "TAGGER_HOME": str(home), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def start(stack: Stack, home, *args, env: dict | None = None) -> subprocess.Popen:
    """``tagger ARGS`` started against the stack, its output piped."""
    return subprocess.Popen(
        [sys.executable, "-m", "train.cli", *map(str, args)],
        env={**os.environ, "MLFLOW_TRACKING_URI": stack.uri, "TAGGER_HOME": str(home), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def ok(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_train_runs_promote_tag_and_serve_against_the_server(stack, data, tmp_path, monkeypatch):
    ids = {}
    for task in ("topic", "stance"):
        out = ok(
            tagger(stack, tmp_path, "train", f"configs/{task}/tfidf_logreg.yaml", "--set", f"data.train={data}", *QUICK)
        )
        ids[task] = out.strip()  # stdout is the run id alone (MLflow's run links are kept off it)
        assert len(ids[task]) == 32, out
    # runs, promote and tag in this process (a start-up each costs seconds); serve below is a process again
    monkeypatch.setenv("MLFLOW_TRACKING_URI", stack.uri)
    monkeypatch.setenv("TAGGER_HOME", str(tmp_path))
    assert ids["topic"] in invoke("runs", "--task", "topic", "--wide").stdout
    for task in ("topic", "stance"):
        assert "@champion" in invoke("promote", "--task", task).stdout
    tagged = invoke("tag", "Iran and Iraq signed a gas supply deal.", "--json").stdout
    row = json.loads(tagged.splitlines()[0])
    assert {"topics", "stance", "topic_scores", "stance_scores"} <= set(row)
    # the run's artifacts went through the server (proxied), not to a local folder
    mlflow.set_tracking_uri(stack.uri)
    assert mlflow.get_run(ids["topic"]).info.artifact_uri.startswith("mlflow-artifacts:")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "train.cli", "serve", "--port", str(port)],
        env={**os.environ, "MLFLOW_TRACKING_URI": stack.uri, "TAGGER_HOME": str(tmp_path)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert wait_ready(f"http://127.0.0.1:{port}"), "tagger serve did not become ready"
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/tag", json={"text": "The ministers met in Baghdad."})
        assert answer.status_code == 200, answer.text
        assert answer.json()["sentences"][0]["stance"] in {"favor", "against", "neutral"}
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_eight_trainings_at_once_lose_nothing(stack, data, tmp_path):
    args = ["train", "configs/stance/tfidf_logreg.yaml", "--set", f"data.train={data}", *QUICK]
    procs = [start(stack, tmp_path, *args, "--set", f"tracking.run_name=concurrent-{i}") for i in range(8)]
    results = [proc.communicate(timeout=600) for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * 8, [err[-500:] for _, err in results]
    assert not any("database is locked" in err for _, err in results)
    mlflow.set_tracking_uri(stack.uri)
    runs = mlflow.search_runs(
        experiment_names=["tagger-stance"], filter_string="tags.mlflow.runName LIKE 'concurrent-%'"
    )
    assert len(runs) == 8 and set(runs["status"]) == {"FINISHED"}
    assert set(runs["run_id"]) == {out.strip() for out, _ in results}


def test_server_killed_mid_training_then_restarted(stack, data, tmp_path):
    mlflow.set_tracking_uri(stack.uri)
    client = mlflow.MlflowClient()
    before = mlflow.search_runs(experiment_names=["tagger-topic", "tagger-stance"])
    versions = {
        m.name: len(client.search_model_versions(f"name = '{m.name}'")) for m in client.search_registered_models()
    }
    args = ["train", "configs/topic/tfidf_logreg.yaml", "--set", f"data.train={data}"]
    proc = start(stack, tmp_path, *args, env={"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1"})
    deadline, seen = time.time() + 120, ""
    while time.time() < deadline and "training tfidf_logreg" not in seen:
        seen += proc.stderr.readline()
    stack.run("stop")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: tracking store") and "stopped answering" in last, err[-2000:]
    stack.run("start")
    after = mlflow.search_runs(experiment_names=["tagger-topic", "tagger-stance"])
    kept = after[after["run_id"].isin(before["run_id"])]
    assert len(kept) == len(before)  # everything logged before is still there, metrics too
    assert kept.set_index("run_id")["metrics.dev/f1_macro"].equals(before.set_index("run_id")["metrics.dev/f1_macro"])
    finished = before[before["status"] == "FINISHED"]["run_id"].iloc[0]
    assert {a.path for a in client.list_artifacts(finished)} >= {"config.yaml", "summary.json"}
    # no half-registered model: registration only happens through promote
    now = {m.name: len(client.search_model_versions(f"name = '{m.name}'")) for m in client.search_registered_models()}
    assert now == versions
    listed = ok(tagger(stack, tmp_path, "runs", "--task", "topic", "--all"))
    assert "KILLED" in listed  # the dead command's run, marked by the next command on this host


def test_two_sweep_workers_share_one_study_in_postgresql(stack, data, tmp_path):
    """Two ``tagger sweep`` processes (as on two machines) on one study in PostgreSQL: exactly N trials."""
    import optuna

    storage = f"postgresql://mlflow@127.0.0.1:{stack.env['TAGGER_PG_PORT']}/optuna"
    space = tmp_path / "space.yaml"
    space.write_text("params:\n  model.params.C: {type: float, low: 0.1, high: 10, log: true}\n", encoding="utf-8")
    args = ["sweep", "configs/stance/tfidf_logreg.yaml", "--space", space, "--trials", 4, "--storage", storage]
    args += ["--study", "shared-pg", "--set", f"data.train={data}", "--set", "split.folds=2", *QUICK]
    procs = [start(stack, tmp_path, *args, "--out", tmp_path / f"out{i}") for i in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
    study = optuna.load_study(study_name="shared-pg", storage=storage)
    counted = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(counted) == 4 and len({t.number for t in counted}) == 4
    assert len({t.user_attrs["tagger.pid"] for t in counted}) == 2  # both workers ran trials
    mlflow.set_tracking_uri(stack.uri)
    trials = mlflow.search_runs(experiment_names=["tagger-stance"], filter_string="tags.`optuna.study` = 'shared-pg'")
    children = trials[trials["tags.tagger.sweep"] == "trial"]
    assert sorted(children["tags.optuna.trial"].astype(int)) == sorted(t.number for t in counted)
    parents = trials[trials["tags.tagger.sweep"] == "parent"]
    assert len(parents) == 1 and set(children["tags.mlflow.parentRunId"]) == set(parents["run_id"])
