"""Hostile input to the commands: files that are not files, YAML bombs, out-of-range numbers, path
traversal in model URIs and sweep names. Each gets one ``error:`` line, exit status 2, no run and no file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow
import pytest
from conftest import ROOT, read_jsonl, run_main, write_jsonl

TOPIC = str(ROOT / "configs/topic/tfidf_logreg.yaml")
STANCE = str(ROOT / "configs/stance/tfidf_logreg.yaml")
SEEDS = str(ROOT / "data/eval/seeds.jsonl")
SECRET = "s3cr3t-line-that-must-never-be-printed"

BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi", strict=True)
)


def _config(tmp_path: Path, text: str, name: str = "config.yaml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def _extends(tmp_path: Path, parent: str) -> str:
    return _config(tmp_path, f"extends: {json.dumps(parent)}\n")


def _fifo(tmp_path: Path, name: str = "fifo.yaml") -> str:
    path = tmp_path / name
    os.mkfifo(path)
    return str(path)


def _secret(tmp_path: Path, name: str = "secret") -> str:
    path = tmp_path / name
    path.write_text("".join(f"user{i}:{SECRET}:19000:0:99999:7:::\n" for i in range(5)), encoding="utf-8")
    return str(path)


def _labelled(tmp_path: Path, label) -> str:
    rows = read_jsonl(ROOT / "data/train/news_sentences.jsonl")[:40]
    rows[17] = {**rows[17], "topics": label, "stance": label}
    return str(write_jsonl(tmp_path / "train.jsonl", rows))


def _object_id(tmp_path: Path) -> str:
    rows = read_jsonl(ROOT / "data/train/news_sentences.jsonl")[:40]
    rows[6] = {**rows[6], "id": {"nested": 1}}
    return str(write_jsonl(tmp_path / "train.jsonl", rows))


def _deep(tmp_path: Path) -> str:
    """A row 100,000 lists deep: Python's JSON parser itself gives up (RecursionError)."""
    lines = [json.dumps(r) for r in read_jsonl(ROOT / "data/train/news_sentences.jsonl")[:40]]
    lines[2] = '{"id": "deep", "text": "x", "topics": ' + "[" * 100_000 + "]" * 100_000 + "}"
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def _surrogate(tmp_path: Path) -> str:
    rows = read_jsonl(ROOT / "data/train/news_sentences.jsonl")[:40]
    lines = [json.dumps(r) for r in rows]
    lines[4] = lines[4].replace('"text": "', '"text": "\\ud800', 1)
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


# (id, argv builder taking tmp_path, text expected in the one error line)
CASES = [
    ("yaml bomb", lambda t: ["train", _config(t, BOMB)], "aliases (*name) are not allowed"),
    ("config fifo", lambda t: ["train", _fifo(t)], "not a regular file"),
    ("extends folder", lambda t: ["train", _extends(t, str(ROOT / "configs"))], "must end in .yaml"),
    ("extends empty", lambda t: ["train", _extends(t, "")], "must end in .yaml"),
    ("extends /dev/zero", lambda t: ["train", _extends(t, "/dev/zero")], "must end in .yaml"),
    ("extends fifo", lambda t: ["train", _extends(t, _fifo(t, "parent.yaml"))], "not a regular file"),
    ("extends folder.yaml", lambda t: ["train", _extends(t, str(t))], "must end in .yaml"),
    ("extends secret", lambda t: ["train", _extends(t, _secret(t))], "must end in .yaml"),
    (
        "data secret tsv",
        lambda t: ["train", TOPIC, "--set", f"data.train={_secret(t)}", "--set", "data.format=tsv"],
        "does not look like a header",
    ),
    ("data fifo", lambda t: ["train", TOPIC, "--set", f"data.train={_fifo(t, 'd.jsonl')}"], "not a regular file"),
    ("seed -1", lambda t: ["train", TOPIC, "--set", "seed=-1"], "'seed'"),
    ("seed 2**40", lambda t: ["train", TOPIC, "--set", f"seed={2**40}"], "less than or equal to 4294967295"),
    ("split seed", lambda t: ["train", TOPIC, "--set", "split.seed=-3"], "'split.seed'"),
    *[
        (
            f"encoding {codec}",
            lambda t, c=codec: ["train", TOPIC, "--set", f"data.encoding={c}"],
            "unknown text encoding",
        )
        for codec in ("rot13", "base64", "hex", "uu", "zlib")
    ],
    ("tracking uri", lambda t: ["train", TOPIC, "--set", "tracking.uri=notascheme:foo"], "unknown tracking URI"),
    ("bootstrap 1e9", lambda t: ["train", TOPIC, "--set", "evaluation.bootstrap_samples=1000000000"], "100000"),
    ("C inf", lambda t: ["train", TOPIC, "--set", "model.params.C=.inf"], "finite number"),
    ("C nan", lambda t: ["train", TOPIC, "--set", "model.params.C=.nan"], "finite number"),
    ("dev 0.99", lambda t: ["train", TOPIC, "--set", "split.dev_fraction=0.99"], "'split.dev_fraction'"),
    ("task name", lambda t: ["train", TOPIC, "--set", "task.name=../../x"], "'task.name'"),
    ("nested label", lambda t: ["train", TOPIC, "--set", f"data.train={_labelled(t, [['energy']])}"], "line 18"),
    ("dict label", lambda t: ["train", STANCE, "--set", f"data.train={_labelled(t, {'v': 1})}"], "got dict"),
    ("lone surrogate", lambda t: ["train", TOPIC, "--set", f"data.train={_surrogate(t)}"], "line 5: a lone surrogate"),
    ("deep json", lambda t: ["train", TOPIC, "--set", f"data.train={_deep(t)}"], "line 3: JSON nested deeper than 32"),
    ("object id", lambda t: ["train", TOPIC, "--set", f"data.train={_object_id(t)}"], "an id must be a string"),
    (
        "store in /proc",
        lambda t: ["train", TOPIC, "--set", "tracking.uri=sqlite:////proc/nope/x.db"],
        "tracking store sqlite:////proc/nope/x.db: folder",
    ),
    ("runs limit", lambda t: ["runs", "--task", "topic", "--limit", "-5"], "--limit"),
    ("output /dev/full", lambda t: ["split-seeds", "--output", "/dev/full"], "not a regular file"),
    ("output no folder", lambda t: ["split-seeds", "--output", str(t / "missing" / "s.jsonl")], "does not exist"),
    ("output folder", lambda t: ["split-seeds", "--output", str(t)], "is a folder"),
    ("report dir /proc", lambda t: ["evaluate", "x", "--data", SEEDS, "--report-dir", "/proc/x"], "cannot write"),
    (
        "export under a file",
        lambda t: ["export", "--task", "topic", "--out", str(Path(_config(t, "x: 1\n")) / "m")],
        "not a folder",
    ),
    (
        "token /dev/zero",
        lambda t: ["serve", "--port", "1", "--admin-token-file", "/dev/zero"],
        "not a regular file",
    ),
    ("token binary", lambda t: ["serve", "--admin-token-file", _config(t, "\x00" * 40, "token")], "printable"),
    ("traversal", lambda t: ["predict", f"runs:/{'a' * 32}/../../../../tmp/x/m", "--input", str(t / "in.txt")], "'..'"),
    ("traversal encoded", lambda t: ["predict", f"runs:/{'a' * 32}/%2e%2e/m", "--input", str(t / "in.txt")], "'..'"),
    ("folder traversal", lambda t: ["predict", "models/../x", "--input", str(t / "in.txt")], "'..' is not allowed"),
    ("bad run id", lambda t: ["predict", "runs:/abc/model", "--input", str(t / "in.txt")], "32-character run id"),
]


@pytest.mark.parametrize(("name", "argv", "message"), CASES, ids=[c[0] for c in CASES])
def test_hostile_input_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys, name, argv, message):
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "in.txt").write_text("Talks resumed.\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    args = argv(tmp_path)
    monkeypatch.chdir(work)
    before = sorted(p.name for p in tmp_path.iterdir())
    store = f"sqlite:///{tmp_path / 'store' / 'bad.db'}"
    (tmp_path / "store").mkdir()
    code, lines = run_main(monkeypatch, capsys, *args, store=store)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), lines
    assert message in lines[0], lines[0]
    assert SECRET not in lines[0]
    assert list(work.iterdir()) == []  # nothing written where the command ran
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "store") == before
    if (tmp_path / "store" / "bad.db").exists():
        client = mlflow.MlflowClient(store)
        experiments = [e.experiment_id for e in client.search_experiments()]
        assert not experiments or client.search_runs(experiments) == []


def test_readme_label_map_with_a_number_key_is_accepted(tmp_path):
    from train.config import load_config

    config = load_config(STANCE, ["data.label_map={0: against, 1: favor}"])
    assert config.data.label_map == {"0": "against", "1": "favor"}


def test_yaml_anchors_without_aliases_still_load(tmp_path):
    from train.config import load_config

    path = _config(tmp_path, f"extends: {STANCE}\nseed: &s 7\n")
    assert load_config(path).seed == 7


def test_model_uri_resolving_outside_the_artifact_folders_is_refused(registry, tmp_path, monkeypatch, capsys):
    """A symlink planted in the artifact store that leads elsewhere does not get a pickle loaded."""
    import shutil

    from train.tracking.packaging import check_in_store

    run_id = registry[0][("topic", "tfidf_logreg")]
    artifacts = Path(check_in_store(f"runs:/{run_id}"))
    assert artifacts.is_dir()
    outside = tmp_path / "evil_model"
    shutil.copytree(mlflow.artifacts.download_artifacts(f"runs:/{run_id}/model"), outside)
    assert (outside / "MLmodel").is_file()
    link = artifacts / "planted"
    link.symlink_to(outside, target_is_directory=True)
    try:
        code, lines = run_main(
            monkeypatch,
            capsys,
            "predict",
            f"runs:/{run_id}/planted",
            "--input",
            str(_secret(tmp_path, "in.txt")),
            store=os.environ["MLFLOW_TRACKING_URI"],
        )
    finally:
        link.unlink()
    assert code == 2 and "outside the tracking store's artifact folders" in lines[-1], lines


# --- sweeps ----------------------------------------------------------------------------------------------------


def _space(tmp_path: Path, params: str) -> str:
    return _config(tmp_path, f"params:\n{params}", "space.yaml")


SWEEP_CASES = [
    ("infinite bound", "  model.params.C: {type: float, low: 1, high: .inf}\n", [], "finite number"),
    ("huge int bound", "  model.params.min_df: {type: int, low: 1, high: 100000000000}\n", [], "less than or equal"),
    ("study traversal", "  model.params.C: {type: float, low: 1, high: 2}\n", ["--study", "../../../X"], "--study"),
    ("empty study", "  model.params.C: {type: float, low: 1, high: 2}\n", ["--study", ""], "--study ''"),
    (
        "storage in /proc",
        "  model.params.C: {type: float, low: 1, high: 2}\n",
        ["--storage", "sqlite:////proc/nope/x.db"],
        "--storage",
    ),
    (
        "storage closed port",
        "  model.params.C: {type: float, low: 1, high: 2}\n",
        ["--storage", "postgresql://u@127.0.0.1:9/x"],
        "the Optuna storage cannot be reached",
    ),
]


@pytest.mark.parametrize(("name", "space", "extra", "message"), SWEEP_CASES, ids=[c[0] for c in SWEEP_CASES])
def test_bad_sweep_is_refused_before_any_trial(tmp_path, monkeypatch, capsys, name, space, extra, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TAGGER_HOME", str(tmp_path))
    args = ["sweep", TOPIC, "--space", _space(tmp_path, space), "--trials", "3", *extra]
    code, lines = run_main(monkeypatch, capsys, *args, store=f"sqlite:///{tmp_path / 'm.db'}")
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not (tmp_path / "optuna.db").exists() and not (tmp_path / "sweeps").exists()


@pytest.mark.slow
def test_a_sweep_whose_trials_all_fail_exits_with_the_first_cause(tmp_path, small_train, monkeypatch, capsys):
    import optuna

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TAGGER_HOME", str(tmp_path))
    space = _space(tmp_path, "  model.params.min_df: {type: int, low: 100000, high: 200000}\n")
    args = ["sweep", TOPIC, "--space", space, "--trials", "6", "--set", f"data.train={small_train}"]
    code, lines = run_main(monkeypatch, capsys, *args, store=f"sqlite:///{tmp_path / 'm.db'}")
    assert code == 2 and lines[-1].startswith("error: sweep") and "trials failed; the first:" in lines[-1], lines
    assert "min_df is" in lines[-1] and not any("Traceback" in line for line in lines)
    study = optuna.load_study(study_name="topic-tfidf_logreg", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert 1 <= len(study.trials) <= 3  # the worker stopped after three failures in a row
    runs = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'm.db'}").search_runs(
        [mlflow.MlflowClient(f"sqlite:///{tmp_path / 'm.db'}").get_experiment_by_name("tagger-topic").experiment_id],
        "tags.`tagger.sweep` = 'parent'",
    )
    assert [r.info.status for r in runs] == ["FAILED"]


def test_a_suggest_that_raises_counts_as_a_failure(tmp_path, small_train, monkeypatch):
    """Optuna refusing a value (here: a space changed under a study) is a failed trial, not an endless loop."""
    from train.config import load_config
    from train.training import sweep as sweep_module
    from train.training.space import FloatRange

    def refuse(self, trial, name):
        raise ValueError("the sampler cannot draw this value")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TAGGER_HOME", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'm.db'}")
    monkeypatch.setattr(FloatRange, "suggest", refuse)
    space = _space(tmp_path, "  model.params.C: {type: float, low: 1, high: 2}\n")
    from train.errors import TaggerError

    with pytest.raises(TaggerError, match="the sampler cannot draw this value"):
        overrides = (f"data.train={small_train}",)
        options = sweep_module.SweepOptions(str(space), 50, overrides=overrides)
        sweep_module.sweep(load_config(TOPIC, list(overrides)), config_path=TOPIC, options=options)


# --- temporary files ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_killed_command_leaves_no_temporary_files_after_the_next(tmp_path, small_train):
    """Every command works in its own temporary folder: removed at exit, or by the next command after kill -9."""
    import signal
    import subprocess
    import sys
    import time

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "TAGGER_PRIVATE_TMPDIR"}
    env.update(TMPDIR=str(scratch), MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'm.db'}", TAGGER_HOME=str(tmp_path))
    tagger = [sys.executable, "-c", "from train.cli import main; main()"]
    args = ["train", TOPIC, "--set", f"data.train={small_train}", "--set", "evaluation.bootstrap_samples=0"]
    process = subprocess.Popen([*tagger, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    mine = scratch / f"tagger-{os.getuid()}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (mine.exists() and any(mine.iterdir())):
        time.sleep(0.1)
    time.sleep(1.0)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert [p.name.split("-")[0] for p in mine.iterdir()] == [str(process.pid)]  # left behind by the kill
    done = subprocess.run([*tagger, "runs", "--task", "topic", "--all"], env=env, capture_output=True, timeout=120)
    assert done.returncode in (0, 2), done.stderr
    assert list(scratch.iterdir()) == []  # the next command removed it, and its own
