"""Runs and the model registry after ``kill -9``, and promotes that run at the same time (real processes)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import mlflow
import pytest
from conftest import read_jsonl, write_jsonl

from train.domain import BUNDLE, CHAMPION, PREVIOUS, registered_name
from train.tracking.promote import DONE, PENDING, PROMOTE_TAG, REPLACES_TAG
from train.tracking.store import initialize_store

ROOT = Path(__file__).resolve().parent.parent
TASKS = ("topic", "stance")

pytestmark = [pytest.mark.slow]


def tagger(*args: str, env: dict, timeout: int = 300) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "train.cli", *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, dict[str, tuple[str, str]]]:
    """A store with two TF-IDF runs per task; (its database, {task: (winner, runner-up)})."""
    from train.config import load_config
    from train.tracking.promote import choose
    from train.training.pipeline import train

    folder = tmp_path_factory.mktemp("registry")
    rows = read_jsonl(ROOT / "data/train/news_sentences.jsonl")
    docs = set(sorted({r["doc_id"] for r in rows})[::4])
    data = write_jsonl(folder / "train.jsonl", [r for r in rows if r["doc_id"] in docs][:400])
    database = folder / "base.db"
    uri = f"sqlite:///{database}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        for task in TASKS:
            for family in ("tfidf_logreg", "tfidf_svm"):
                overrides = [f"data.train={data}", "evaluation.bootstrap_samples=0", "evaluation.sets=[]"]
                if family == "tfidf_logreg":
                    overrides.append("model.params.char_ngram_range=null")
                train(
                    load_config(ROOT / f"configs/{task}/{family}.yaml", overrides),
                    config_path=f"configs/{task}/{family}.yaml",
                )
        picks = {}
        for task in TASKS:
            choice = choose(task)
            picks[task] = (choice.winner["run_id"], choice.runner_up["run_id"])
    return database, picks


@pytest.fixture
def store(trained, tmp_path, monkeypatch) -> tuple[str, dict, dict[str, tuple[str, str]]]:
    """A copy of the trained store whose champions are the runners-up, as if the winners came later;
    (its URI, the environment of ``tagger`` commands on it, {task: (winner, runner-up)})."""
    database, picks = trained
    copy = tmp_path / "mlflow.db"
    with sqlite3.connect(database) as source, sqlite3.connect(copy) as target:
        source.backup(target)
    uri = f"sqlite:///{copy}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = mlflow.MlflowClient(uri)
    for task, (_, runner_up) in picks.items():
        version = mlflow.register_model(f"runs:/{runner_up}/model", registered_name(task))
        client.set_registered_model_alias(registered_name(task), CHAMPION, version.version)
    return uri, {**os.environ, "MLFLOW_TRACKING_URI": uri}, picks


def versions(client: mlflow.MlflowClient, name: str) -> list:
    return sorted(client.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version))


def pair(version) -> tuple[str, str]:
    return version.tags["topic_version"], version.tags["stance_version"]


def test_concurrent_promotes_register_each_run_and_pair_once(store):
    """4 promotes at once, topic and stance mixed: the combined model was registered twice with the
    same contents, a run got two versions, and no ``previous`` alias was set."""
    from train.tracking.promote import register_bundle

    uri, env, picks = store
    first, _ = register_bundle()  # tagger@champion: both runners-up
    procs = [tagger("promote", "--task", task, env=env) for task in ("topic", "stance", "topic", "stance")]
    outcomes = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    assert [code for code, _ in outcomes] == [0] * 4, [err[-800:] for _, err in outcomes]

    client = mlflow.MlflowClient(uri)
    champions = {}
    for task, (winner, runner_up) in picks.items():
        name = registered_name(task)
        assert sorted(v.run_id for v in versions(client, name)) == sorted([winner, runner_up])  # one per run
        champion = client.get_model_version_by_alias(name, CHAMPION)
        assert champion.run_id == winner
        assert client.get_model_version_by_alias(name, PREVIOUS).run_id == runner_up
        champions[task] = str(champion.version)
    bundles = versions(client, BUNDLE)
    pairs = [pair(v) for v in bundles]
    assert len(pairs) == len(set(pairs)) >= 2, pairs  # each (topic, stance) pair registered once
    champion = client.get_model_version_by_alias(BUNDLE, CHAMPION)
    assert pair(champion) == (champions["topic"], champions["stance"])
    previous = client.get_model_version_by_alias(BUNDLE, PREVIOUS)
    assert previous.version != champion.version
    names = (*map(registered_name, TASKS), BUNDLE)
    assert all(v.tags.get(PROMOTE_TAG) != PENDING for name in names for v in versions(client, name))


KILLED_PROMOTE = """
import sys, time
import mlflow
from train.tracking.promote import _register
topic, stance, stale = sys.argv[1:4]
client = mlflow.MlflowClient()
former = {n: client.get_model_version_by_alias(n, "champion") for n in ("tagger-topic", "tagger-stance")}
# topic: killed right after creating its version; stance: after moving champion, before previous
_register(f"runs:/{topic}/model", "tagger-topic", {"run_id": topic}, former["tagger-topic"])
version = _register(f"runs:/{stance}/model", "tagger-stance", {"run_id": stance}, former["tagger-stance"])
client.set_registered_model_alias("tagger-stance", "champion", version)
# the combined model of a pair that is no longer wanted, never made champion
_register(f"runs:/{stale}/model", "tagger", {"topic_version": "1", "stance_version": "1"}, None)
print("registered", flush=True)
time.sleep(600)
"""


def test_next_promote_finishes_or_undoes_a_killed_promote(store):
    """A promote killed after creating a version left it without an alias; the next promote registered
    the same run again."""
    uri, env, picks = store
    (topic, topic_runner_up), (stance, _) = picks["topic"], picks["stance"]
    killed = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(KILLED_PROMOTE), topic, stance, topic_runner_up],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert killed.stdout.readline().strip() == "registered"
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=60)
    client = mlflow.MlflowClient(uri)
    names = ("tagger-topic", "tagger-stance", BUNDLE)
    left = {name: client.get_model_version(name, versions(client, name)[-1].version) for name in names}
    assert all(v.tags[PROMOTE_TAG] == PENDING for v in left.values())
    assert left["tagger-topic"].aliases == [] and left["tagger-stance"].aliases == [CHAMPION]

    proc = tagger("promote", "--task", "topic", env=env)
    assert proc.wait(timeout=600) == 0, proc.stderr.read()[-800:]

    # topic: the version the killed promote created is finished, not registered again
    topic_versions = versions(client, "tagger-topic")
    assert [v.run_id for v in topic_versions] == [topic_runner_up, topic]
    champion = client.get_model_version_by_alias("tagger-topic", CHAMPION)
    assert champion.version == left["tagger-topic"].version and champion.tags[PROMOTE_TAG] == DONE
    assert champion.description.startswith("Best topic run") and champion.tags["metric"] == "validation/f1_macro"
    assert client.get_model_version_by_alias("tagger-topic", PREVIOUS).run_id == topic_runner_up
    # stance: it had become champion; its previous is set and it is done
    stance_champion = client.get_model_version_by_alias("tagger-stance", CHAMPION)
    assert stance_champion.run_id == stance and stance_champion.tags[PROMOTE_TAG] == DONE
    assert client.get_model_version_by_alias("tagger-stance", PREVIOUS).version == int(
        stance_champion.tags[REPLACES_TAG]
    )
    # the combined model: the stale pending pair is removed, the wanted pair registered once
    [bundle] = versions(client, BUNDLE)
    bundle = client.get_model_version(BUNDLE, bundle.version)
    assert pair(bundle) == (str(champion.version), str(stance_champion.version))
    assert bundle.aliases == [CHAMPION] and bundle.tags[PROMOTE_TAG] == DONE


def test_killed_cv_leaves_no_running_fold(tmp_path):
    """``tagger cv`` killed with -9: its parent was marked KILLED, but the fold run stayed RUNNING."""
    rows = read_jsonl(ROOT / "data/train/news_sentences.jsonl")[:1200]
    data = write_jsonl(tmp_path / "train.jsonl", rows)
    uri = f"sqlite:///{tmp_path / 'cv.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    initialize_store(uri)  # the schema exists before this test reads the store while cv writes it
    proc = tagger(
        "cv", "configs/topic/tfidf_svm.yaml", "--folds", "5", "--set", f"data.train={data}",
        "--set", "evaluation.sets=[]", env=env,
    )  # fmt: skip
    client = mlflow.MlflowClient(uri)
    deadline = time.time() + 240
    fold = None
    while fold is None and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        experiment = client.get_experiment_by_name("tagger-topic")
        if experiment is None:
            continue
        proc.send_signal(signal.SIGSTOP)  # hold it still while the store is read
        try:
            running = client.search_runs(
                [experiment.experiment_id], "attributes.status = 'RUNNING' and tags.`tagger.cv` = 'fold'"
            )
        except mlflow.exceptions.MlflowException:
            running = []  # stopped while it held the database
        if running:
            fold = running[0]
            proc.send_signal(signal.SIGKILL)
        proc.send_signal(signal.SIGCONT)
    proc.wait(timeout=60)
    assert fold is not None, proc.stderr.read()[-800:]

    listed = tagger("runs", "--task", "topic", "--all", env=env)
    assert listed.wait(timeout=300) == 0, listed.stderr.read()[-800:]
    runs = client.search_runs([fold.info.experiment_id])
    assert {r.data.tags.get("tagger.cv") for r in runs} == {"parent", "fold"}
    assert {r.info.status for r in runs} <= {"FINISHED", "KILLED"}
    assert client.get_run(fold.info.run_id).info.status == "KILLED"


def test_killed_sweep_leaves_no_running_trial(tmp_path):
    """``tagger sweep`` killed with -9 (its whole process group): its parent and trial runs are marked KILLED."""
    rows = read_jsonl(ROOT / "data/train/news_sentences.jsonl")[:1200]
    data = write_jsonl(tmp_path / "train.jsonl", rows)
    space = tmp_path / "space.yaml"
    space.write_text("params:\n  model.params.C: {type: float, low: 0.1, high: 10, log: true}\n", encoding="utf-8")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "TAGGER_HOME": str(tmp_path)}
    initialize_store(uri)  # the schema exists before this test reads the store while the sweep writes it
    proc = subprocess.Popen(
        [sys.executable, "-m", "train.cli", "sweep", "configs/stance/tfidf_logreg.yaml", "--space", str(space),
         "--trials", "2", "--study", "killed", "--set", f"data.train={data}", "--set", "split.folds=5"],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    client = mlflow.MlflowClient(uri)
    deadline = time.time() + 240
    trial = None
    while trial is None and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        experiment = client.get_experiment_by_name("tagger-stance")
        if experiment is None:
            continue
        os.killpg(proc.pid, signal.SIGSTOP)  # hold the sweep and its workers still while the store is read
        try:
            running = client.search_runs(
                [experiment.experiment_id], "attributes.status = 'RUNNING' and tags.`tagger.sweep` = 'trial'"
            )
        except mlflow.exceptions.MlflowException:
            running = []
        if running:
            trial = running[0]
            os.killpg(proc.pid, signal.SIGKILL)
        os.killpg(proc.pid, signal.SIGCONT)
    proc.wait(timeout=60)
    assert trial is not None, proc.stderr.read()[-800:]

    listed = tagger("runs", "--task", "stance", "--all", env=env)
    assert listed.wait(timeout=300) == 0, listed.stderr.read()[-800:]
    runs = client.search_runs([trial.info.experiment_id])
    assert {r.info.status for r in runs} <= {"FINISHED", "KILLED"}
    assert client.get_run(trial.info.run_id).info.status == "KILLED"
