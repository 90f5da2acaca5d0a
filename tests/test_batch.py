"""``tagger tag-batch``: local and Spark engines give the same Parquet output; clear errors before any work."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT, invoke, read_jsonl, run_main


@pytest.fixture(scope="module")
def sentences(tmp_path_factory):
    """10,000 sentences (the corpus, repeated with numbered variants) with ids, half of them with a target."""
    rows = read_jsonl(ROOT / "data/train/news_sentences.jsonl")
    out = []
    for i in range(10_000):
        row = rows[i % len(rows)]
        item = {"id": i, "text": f"{row['text']} ({i // len(rows)})", "topics": row["topics"]}
        if i % 2:
            item["target"] = row["target"]
        out.append(item)
    path = tmp_path_factory.mktemp("batch") / "sentences.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in out), encoding="utf-8")
    return path


def read_output(folder) -> pd.DataFrame:
    frame = pd.read_parquet(folder).sort_values("id").reset_index(drop=True)
    return frame[sorted(frame.columns)]


@pytest.mark.slow
def test_local_batch_tagging_streams_chunks(local_output):
    out = local_output
    frame = read_output(out)
    assert len(frame) == 10_000 and frame["id"].tolist() == list(range(10_000))
    assert sorted(p.name for p in out.iterdir()) == ["_SUCCESS", "part-00000.parquet"]  # no _temporary/ left
    assert {"topics", "stance", "topic_score_trade", "stance_score_favor", "topics_input"} <= set(frame.columns)
    assert set(frame["stance"]) <= {"favor", "against", "neutral"}
    # rows without a target got the default one: the same text tagged alone agrees
    expected = invoke("predict", "models:/tagger@champion", "--input", "-", input=frame["text"][0] + "\n").stdout
    assert json.loads(expected)["stance"] == frame["stance"][0]


def _group_alive(pgid: int) -> list[str]:
    """The processes still in process group ``pgid`` (``ps`` lines), zombies left out."""
    lines = subprocess.run(["ps", "-eo", "pgid=,stat=,pid=,args="], capture_output=True, text=True).stdout
    return [line for line in lines.splitlines() if int(line.split()[0]) == pgid and not line.split()[1].startswith("Z")]


@pytest.fixture
def spark_cluster(tmp_path):
    """A standalone Spark master and one worker (2 cores, 1 GB) on 127.0.0.1, started with the ``spark-class``
    of the installed PySpark; its ``spark://`` URL and the master's JSON status URL. Both are stopped afterwards,
    with everything they started (their process groups), and ``ps`` must show none of them left."""
    if importlib.util.find_spec("pyspark") is None:
        pytest.skip("PySpark is not installed (make test installs .[spark])")
    if not shutil.which("java"):
        pytest.skip("Java is not installed; run 'make services'")
    import httpx
    import pyspark
    from conftest import free_port

    home = Path(pyspark.__file__).parent
    port, ui = free_port(), free_port()
    logs = tmp_path / "spark-logs"
    logs.mkdir()
    env = {**os.environ, "SPARK_HOME": str(home), "SPARK_LOG_DIR": str(logs), "SPARK_LOCAL_IP": "127.0.0.1",
           "SPARK_DAEMON_MEMORY": "512m", "SPARK_WORKER_DIR": str(tmp_path / "spark-work"),
           "SPARK_LOCAL_DIRS": str(tmp_path / "spark-work"), "PYSPARK_PYTHON": sys.executable}
    commands = {
        "master": ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
                   "--webui-port", str(ui)],
        "worker": ["org.apache.spark.deploy.worker.Worker", f"spark://127.0.0.1:{port}", "--host", "127.0.0.1",
                   "--webui-port", str(free_port()), "--cores", "2", "--memory", "1g",
                   "--work-dir", str(tmp_path / "spark-work")],
    }
    procs: dict[str, subprocess.Popen] = {}

    def log_tail() -> str:
        return "\n".join(f"--- {name}:\n" + (logs / f"{name}.log").read_text()[-3000:] for name in procs)

    try:
        for name, args in commands.items():
            with open(logs / f"{name}.log", "wb") as out:  # each in its own process group (its executors too)
                procs[name] = subprocess.Popen([str(home / "bin" / "spark-class"), *args], env=env, stdout=out,
                                               stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 90
        while True:  # the master's web UI lists the worker once it has registered
            try:
                if httpx.get(f"http://127.0.0.1:{ui}/json/", timeout=2).json().get("aliveworkers", 0) >= 1:
                    break
            except (httpx.HTTPError, ValueError):
                pass
            dead = [name for name, proc in procs.items() if proc.poll() is not None]
            assert not dead and time.monotonic() < deadline, f"no worker registered ({dead} exited)\n{log_tail()}"
            time.sleep(0.5)
        yield f"spark://127.0.0.1:{port}", f"http://127.0.0.1:{ui}/json/"
    finally:
        for proc in reversed(procs.values()):
            try:
                os.killpg(proc.pid, 15)
            except ProcessLookupError:
                continue
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(_group_alive(proc.pid) for proc in procs.values()) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = [line for proc in procs.values() for line in _group_alive(proc.pid)]
        for proc in procs.values():  # a failure must not leave them behind either
            if _group_alive(proc.pid):
                os.killpg(proc.pid, 9)
        assert left == [], left


@pytest.fixture(scope="module")
def local_output(registry, sentences, tmp_path_factory) -> Path:
    """The local engine's output of the 10,000 sentences, in chunks of 3,000 (shared by the tests below)."""
    out = tmp_path_factory.mktemp("local") / "out"
    invoke("tag-batch", str(sentences), str(out), "--chunk-size", "3000")
    return out


@pytest.mark.slow
@pytest.mark.services
def test_spark_cluster_and_local_outputs_are_identical(registry, sentences, local_output, spark_cluster, tmp_path):
    """``--engine spark`` on a standalone master and worker (separate JVMs and Python workers, the model
    shipped to the executor) gives the local engine's output."""
    import httpx

    master, status = spark_cluster
    invoke("tag-batch", str(sentences), str(tmp_path / "spark"), "--engine", "spark", "--master", master)
    cluster = httpx.get(status, timeout=10).json()  # the job ran there, and its application has ended
    assert [(app["name"], app["state"]) for app in cluster["completedapps"]] == [("tagger tag-batch", "FINISHED")]
    assert cluster["activeapps"] == []
    local, spark = read_output(local_output), read_output(tmp_path / "spark")
    assert list(local.columns) == list(spark.columns) and len(spark) == 10_000
    for column in local.columns:
        left, right = local[column].tolist(), spark[column].tolist()
        if column in ("topics", "topics_input"):
            left, right = [list(v) for v in left], [list(v) for v in right]
        assert left == right, column


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing.jsonl", "{out}"], "missing.jsonl: no such file or folder"),
        (["{data}", "{data}"], "exists and is not a folder"),
        (["{data}", "{out}", "--text-column", "body"], "no column 'body'"),
        (["{data}", "{out}", "--master", "local[2]"], "--master applies to --engine spark only"),
        (["{data}", "{out}", "--model", "models:/nothing@champion"], "model 'models:/nothing@champion': cannot load"),
    ],
)
def test_bad_batch_input_is_one_line(registry, sentences, tmp_path, monkeypatch, capsys, args, message):
    import os

    filled = [a.format(data=sentences, out=tmp_path / "out") for a in args]
    code, lines = run_main(monkeypatch, capsys, "tag-batch", *filled, store=os.environ["MLFLOW_TRACKING_URI"])
    assert code == 2 and len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "out").exists()


def _parquet(path: Path, rows: int = 50) -> bytes:
    pd.DataFrame({"id": range(rows), "text": ["Gas prices rose in Baghdad."] * rows}).to_parquet(path)
    return path.read_bytes()


def _jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


GOOD = json.dumps({"text": "Ankara and Baghdad signed a water deal."})


def _bad_input(case: str, tmp: Path) -> tuple[list[str], str]:
    """(arguments, expected message) of one bad tag-batch input; the output folder is ``tmp/out``."""
    out = str(tmp / "out")
    if case == "corrupt parquet":
        (tmp / "in.parquet").write_bytes(b"PAR1" + os.urandom(300) + b"PAR1")
        return [str(tmp / "in.parquet"), out], "in.parquet: not a readable Parquet file (corrupt or truncated)"
    if case == "truncated parquet":
        whole = _parquet(tmp / "in.parquet")
        (tmp / "in.parquet").write_bytes(whole[: len(whole) // 2])
        return [str(tmp / "in.parquet"), out], "in.parquet: not a readable Parquet file (corrupt or truncated)"
    if case == "empty csv":
        (tmp / "in.csv").write_text("")
        return [str(tmp / "in.csv"), out], "in.csv: empty CSV file (no header line)"
    if case == "ragged csv":
        (tmp / "in.csv").write_text("id,text\n1,a fine row\n2,another row\n3,a row,with a third field\n")
        return [str(tmp / "in.csv"), out], "in.csv: line 4: 3 fields where the header has 2 (ragged CSV)"
    if case == "bad line at 40,000":  # one chunk: the error comes after the output folder exists
        path = _jsonl(tmp / "in.jsonl", [GOOD] * 39_999 + ['{"text": "cut off'])
        return [str(path), out, "--chunk-size", "50000"], "in.jsonl: line 40000: not valid JSON"
    if case == "bad line in a later chunk":  # chunks 1-3 are tagged and written before it
        path = _jsonl(tmp / "in.jsonl", [GOOD] * 350 + ["[1, 2]"])
        return [str(path), out, "--chunk-size", "100"], "in.jsonl: line 351: not a JSON object"
    if case == "mixed text types":
        path = _jsonl(tmp / "in.jsonl", [GOOD] * 5 + [json.dumps({"text": 12345})])
        return [str(path), out], "in.jsonl: line 6: column 'text' holds a number, not text"
    if case == "parquet text of structs":
        pd.DataFrame({"text": [{"a": "Gas prices rose."}] * 5}).to_parquet(tmp / "in.parquet")
        return [str(tmp / "in.parquet"), out], "in.parquet: column 'text' holds object values, not text"
    if case == "mixed types in another column":
        path = _jsonl(tmp / "in.jsonl", [json.dumps({"text": "a", "id": 1}), json.dumps({"text": "b", "id": "x"})])
        return [str(path), out], "in.jsonl: line 2: column 'id' holds a string where earlier rows hold a number"
    if case == "types change between chunks":
        path = _jsonl(tmp / "in.jsonl", [json.dumps({"text": "a", "n": 1})] * 3 + [json.dumps({"text": "b", "n": "x"})])
        return [str(path), out, "--chunk-size", "3"], "in.jsonl: lines 4-4: column 'n' holds string values"
    if case == "nested JSON":
        path = _jsonl(tmp / "in.jsonl", [GOOD, json.dumps({"text": "a", "x": json.loads("[" * 40 + "]" * 40)})])
        return [str(path), out], "in.jsonl: line 2: JSON nested more than 32 levels deep"
    if case == "deeply nested JSON":
        path = _jsonl(tmp / "in.jsonl", ['{"text": "a", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"])
        return [str(path), out], "in.jsonl: line 1: JSON nested more than 32 levels deep"
    if case == "not utf-8":
        (tmp / "in.jsonl").write_bytes(GOOD.encode() + b"\n" + b'{"text": "caf\xe9"}\n')
        return [str(tmp / "in.jsonl"), out], "in.jsonl: line 2: not UTF-8 text"
    if case == "lone surrogate":
        (tmp / "in.jsonl").write_bytes(GOOD.encode() + b"\n" + b'{"text": "bad \\ud800 here"}\n')
        return [str(tmp / "in.jsonl"), out], "in.jsonl: line 2: a string holds a lone surrogate"
    if case == "empty jsonl":
        (tmp / "in.jsonl").write_text("\n\n")
        return [str(tmp / "in.jsonl"), out], "in.jsonl: no rows to tag"
    path = str(_jsonl(tmp / "in.jsonl", [GOOD]))
    if case == "output under a file":
        return [path, str(tmp / "in.jsonl" / "out")], f"cannot be created: {tmp / 'in.jsonl'} is not a folder"
    if case == "output on /dev/full":
        return [path, "/dev/full"], "/dev/full: exists and is not a folder"
    if case == "output unwritable":
        return [path, "/proc/tagger-nope/out"], "/proc/tagger-nope/out: cannot"
    if case == "complete output":
        (tmp / "out").mkdir()
        (tmp / "out" / "part-00000.parquet").write_bytes(b"")
        (tmp / "out" / "_SUCCESS").write_text("")
        return [path, out], "holds the complete output of an earlier run (_SUCCESS)"
    if case == "foreign files":
        (tmp / "out").mkdir()
        (tmp / "out" / "notes.txt").write_text("mine")
        return [path, out], "not empty and not a tag-batch output (it holds 'notes.txt')"
    raise AssertionError(case)


BAD_INPUTS = [
    "corrupt parquet",
    "truncated parquet",
    "empty csv",
    "ragged csv",
    "bad line at 40,000",
    "bad line in a later chunk",
    "mixed text types",
    "parquet text of structs",
    "mixed types in another column",
    "types change between chunks",
    "nested JSON",
    "deeply nested JSON",
    "not utf-8",
    "lone surrogate",
    "empty jsonl",
    "output under a file",
    "output on /dev/full",
    "output unwritable",
    "complete output",
    "foreign files",
]


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_or_output_is_one_line_and_leaves_nothing(registry, tmp_path, monkeypatch, capsys, case):
    """Each bad input is one ``error:`` line naming the file (and line), exit 2, and no output folder
    (or, where one was there before, the same contents), also when the error comes mid-stream."""
    args, message = _bad_input(case, tmp_path)
    before = sorted(p.name for p in (tmp_path / "out").iterdir()) if (tmp_path / "out").is_dir() else None
    code, lines = run_main(
        monkeypatch, capsys, "tag-batch", *args, "--workers", "1", store=os.environ["MLFLOW_TRACKING_URI"]
    )
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    after = sorted(p.name for p in (tmp_path / "out").iterdir()) if (tmp_path / "out").is_dir() else None
    assert after == before


def test_a_folder_being_written_is_not_replaced(registry, sentences, tmp_path, monkeypatch, capsys):
    """A run's output folder is locked while it works: a second run into it is refused, not let to replace it."""
    import fcntl

    out = tmp_path / "out"
    (out / "_temporary").mkdir(parents=True)
    lock = os.open(out, os.O_RDONLY)
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        code, lines = run_main(
            monkeypatch, capsys, "tag-batch", str(sentences), str(out), store=os.environ["MLFLOW_TRACKING_URI"]
        )
    finally:
        os.close(lock)
    assert code == 2 and lines == [f"error: {out}: another tag-batch run is writing this folder"]
    assert [p.name for p in out.iterdir()] == ["_temporary"]


def test_a_downloaded_model_copy_is_removed(registry, sentences, tmp_path, monkeypatch):
    """A ``runs:/`` model is downloaded into the output's _temporary/ (not MLflow's temp folders) and removed."""
    import tempfile

    runs, _ = registry
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    out, head = tmp_path / "out", tmp_path / "head.jsonl"  # 1,000 sentences: the copy is the point, not the size
    head.write_text("".join(sentences.read_text(encoding="utf-8").splitlines(keepends=True)[:1000]), encoding="utf-8")
    invoke("tag-batch", str(head), str(out), "--model", f"runs:/{runs[('topic', 'tfidf_logreg')]}/model",
           "--workers", "1")
    assert sorted(p.name for p in out.iterdir()) == ["_SUCCESS", "part-00000.parquet"]
    assert list((tmp_path / "tmp").iterdir()) == []
    assert len(pd.read_parquet(out)) == 1_000


def _descendants(pid: int) -> list[int]:
    """The processes below ``pid`` (children, their children, ...), from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        try:
            parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (ValueError, OSError, IndexError):
            continue
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def _running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie (a dead orphan waiting for init to reap it)."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.slow
def test_kill_9_leaves_no_orphans_and_the_next_run_replaces_it(registry, tmp_path, caplog, monkeypatch):
    """``kill -9`` of tag-batch mid-run: its workers and the resource tracker exit within 10 s, no model copy
    stays in $TMPDIR, no part is visible; the next run replaces the incomplete output, saying so."""
    rows = read_jsonl(ROOT / "data/train/news_sentences.jsonl")
    data = tmp_path / "big.jsonl"
    data.write_text("".join(json.dumps({"id": i, "text": rows[i % len(rows)]["text"]}) + "\n" for i in range(12_000)))
    (tmp_path / "tmp").mkdir()
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp")}
    out = tmp_path / "out"
    command = ["tag-batch", str(data), str(out), "--chunk-size", "200"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "train.cli", *command, "--workers", "2"], env=env, cwd=ROOT, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while not (out / "_temporary" / "part-00000.parquet").exists() and proc.poll() is None:
        assert time.monotonic() < deadline, "tag-batch wrote no part in 120 s"
        time.sleep(0.02)
    children = _descendants(proc.pid)
    proc.kill()
    proc.wait(timeout=10)
    try:
        assert len(children) >= 3, children  # two workers and the resource tracker
        deadline = time.monotonic() + 10
        while [pid for pid in children if _running(pid)] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [pid for pid in children if _running(pid)] == []
    finally:  # a failure must not leave them behind either
        for pid in filter(_running, children):
            os.kill(pid, 9)
    # what the killed command left in $TMPDIR is its own temporary folder only (no model copy), which
    # the next command removes
    left = [p.relative_to(tmp_path / "tmp") for p in (tmp_path / "tmp").rglob("*")]
    assert all(p.parts[0] == f"tagger-{os.getuid()}" for p in left) and not any(p.name == "MLmodel" for p in left)
    import tempfile

    from train.processes import private_tempdir

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    with private_tempdir():
        pass
    assert list((tmp_path / "tmp").iterdir()) == []
    visible = [p for p in out.rglob("*") if not any(part.startswith(("_", ".")) for part in p.relative_to(out).parts)]
    assert visible == [] and not (out / "_SUCCESS").exists()

    with caplog.at_level("INFO", logger="tagger"):
        invoke(*command, "--workers", "1")
    assert f"{out}: incomplete output of an earlier run (no _SUCCESS); replacing it" in caplog.messages
    assert sorted(p.name for p in out.iterdir()) == ["_SUCCESS", "part-00000.parquet"]
    assert pd.read_parquet(out)["id"].tolist() == list(range(12_000))
