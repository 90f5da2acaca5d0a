#!/usr/bin/env python
"""Reliability benchmark of tagger: concurrent trainings, ``kill -9``, bad inputs, load, hostile
connections, and a soak with reloads.

Run from the project root::

    .venv/bin/python bench/reliability.py --output bench/reliability.json \\
        [--sections trainings,kill,bad_inputs,load,connections,soak] [--soak-seconds 300] [--keep]
        [--quick] [--cases REGEX] [--kills cv,promote,...]

Sections:

- ``trainings``: 8 ``tagger train`` processes started at once on a new SQLite store, then again on the
  same (now used) store; every one must exit 0 and leave a FINISHED run (0 lost).
- ``kill``: ``kill -9`` (of the pid alone) of a training during data loading, fitting and model logging;
  the store must still open, the killed run must be marked KILLED by the next command, and a new
  training must finish. Then of ``cv`` (in a fold), ``sweep --jobs 2`` (between trials), ``promote``
  (right after it registered the version, and while it packages the combined model) and ``tag-batch
  --workers 2`` (while loading, and mid-tagging). After each: processes of its session still alive
  after 10 s (orphans), runs still RUNNING after the next command, unreadable visible Parquet parts,
  entries left in its own TMPDIR, duplicate registry versions, and the next command's success.
- ``bad_inputs``: config, data, sweep, CLI, tag-batch and HTTP cases (issue 20's among them); a CLI case
  must exit 2 with one ``error:`` line, no traceback, no side effects (runs, files in the working folder
  or the home, paths it names), no contents of a secret file, within the hang limit (10 s times the
  machine's load per core); an HTTP case must get its 4xx status and leave the server answering. A few
  inputs must be accepted (the README's ``label_map: {0: against}``).
- ``load``: 45 concurrent ~950 KB texts to ``/v1/tag`` while ``/healthz`` and a one-sentence
  ``/v1/tag`` are timed (p99 goals 200 ms and 500 ms).
- ``connections``: 300 slow-header connections (a partial request line, then a byte a second) and 300
  idle ones (half fresh, half after one request): how many the server closes within its documented
  limits (read from ``tagger serve --help``), while normal requests go on.
- ``soak``: open-loop load at 40 requests/s with concurrent reloads; every answer is compared with the
  answer the same server gave single-threaded before the soak; errors, latency and server RSS are reported.

Safety: every subprocess gets a throw-away ``TAGGER_HOME`` and ``MLFLOW_TRACKING_URI=sqlite:///<tmp>/...``
(the project's own ``mlflow.db`` is never touched), HTTP traffic goes to 127.0.0.1 only, every loop is
bounded in count and time, and every process started here is killed on exit (also on errors, Ctrl-C
and SIGTERM). Progress goes to stderr; the JSON report has one entry per section and a top-level
``passed``, and ``goals``: each goal of issue 20's table with its measured value and ``met``. The exit
status is 1 when a section fails. ``--quick`` runs a small subset (about 2 minutes) for development.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import itertools
import json
import math
import os
import random
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

REPO = Path(__file__).resolve().parent.parent
TRAIN_FILE = REPO / "data/train/news_sentences.jsonl"
SEEDS_FILE = REPO / "data/eval/seeds.jsonl"
CONFIGS = {
    "topic_logreg": REPO / "configs/topic/tfidf_logreg.yaml",
    "topic_svm": REPO / "configs/topic/tfidf_svm.yaml",
    "stance_logreg": REPO / "configs/stance/tfidf_logreg.yaml",
    "stance_svm": REPO / "configs/stance/tfidf_svm.yaml",
}
TASK_EXPERIMENTS = ("tagger-topic", "tagger-stance")
SECTIONS = ("trainings", "kill", "bad_inputs", "load", "connections", "soak")

LOG_LINE = re.compile(r"^\d{2}:\d{2}:\d{2} (DEBUG|INFO|WARNING|ERROR|CRITICAL)\b")
RUN_LINE = re.compile(r"MLflow run .* \(([0-9a-f]{32})\)")
SLICE_EVERY = 3  # training slice: every 3rd line of the corpus keeps each training short
CONCURRENT_TRAININGS = 8
TRAIN_TIMEOUT_S = 600.0  # bound on one trial of 8 concurrent trainings (2 cores: about 100 s)
CLI_TIMEOUT_S = 180.0
SERVE_CASE_TIMEOUT_S = 45.0  # a `serve` case that does not fail at start-up is stopped after this
HANG_LIMIT_S = 10.0  # a bad input not answered within this is killed and counted as a hang (--hang-seconds)
CASE_MEMORY_BYTES = 8 * 2**30  # address-space cap of each bad-input process, so /dev/zero cannot eat the machine
MAX_LOAD_SCALE = 6.0  # the hang limit grows with the machine's load (1-minute load per core), at most this much
ORPHAN_WAIT_S = 10.0  # after a kill -9, processes of its session still alive after this are orphans
SERVER_START_S = 120.0
HTTP_TIMEOUT_S = 30.0
STALL_LIMIT_S = 10.0  # the service's body read timeout
STALL_MARGIN_S = 5.0
SOAK_RATE = 40.0  # requests per second, open loop
RELOAD_EVERY_S = 5.0
RSS_EVERY_S = 10.0
RSS_BASELINE_S = 30.0
RSS_GROWTH_LIMIT_PCT = 10.0
SCORE_TOLERANCE = 1e-4  # the service rounds scores to 4 decimals; one unit in the last place is not a wrong answer
GOOD_BODY = {"text": "Iran and Iraq signed a gas deal on Monday."}


class BenchError(Exception):
    """A precondition of a section failed (e.g. the models could not be trained); the section fails."""


def say(message: str) -> None:
    """A progress line on stderr."""
    print(f"{time.strftime('%H:%M:%S')} [reliability] {message}", file=sys.stderr, flush=True)


def first(lines: list[str], limit: int = 300) -> str:
    """The first of ``lines``, shortened, or ''."""
    return lines[0][:limit] if lines else ""


def non_log_lines(stderr: str) -> list[str]:
    """Non-empty stderr lines that are not the CLI's timestamped progress/log lines."""
    return [line for line in stderr.splitlines() if line.strip() and not LOG_LINE.match(line)]


def log_lines(stderr: str) -> list[str]:
    """The CLI's timestamped progress/log lines."""
    return [line for line in stderr.splitlines() if LOG_LINE.match(line)]


def last_line(text: str) -> str:
    """The last non-empty line of ``text``, shortened."""
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of ``values`` (``q`` in 0..100), or None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tagger_command() -> list[str]:
    """The ``tagger`` console script of the running interpreter's environment."""
    script = Path(sys.executable).parent / "tagger"
    return [str(script)] if script.exists() else [sys.executable, "-m", "train.cli"]


# --------------------------------------------------------------------------------------------------
# processes


class Processes:
    """Every process this bench starts, each in its own session, so all can be killed on exit."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen] = []
        self._lock = threading.Lock()
        self._closed = False

    def start(self, args: list[str], **kwargs: Any) -> subprocess.Popen:
        """Start ``args`` in a new session (its own process group) and remember it; refused once stopping."""
        with self._lock:
            if self._closed:
                raise BenchError("the bench is stopping; no new processes")
            proc = subprocess.Popen(args, start_new_session=True, **kwargs)
            self._procs.append(proc)
        return proc

    @staticmethod
    def kill(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the process group of ``proc`` (which this bench started)."""
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass

    def kill_all(self) -> None:
        """SIGKILL every process group started here that is still alive, reap them, and start no more."""
        with self._lock:
            self._closed = True
            procs = list(self._procs)
        for proc in procs:
            self.kill(proc)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                say(f"process {proc.pid} did not exit after SIGKILL")


PROCS = Processes()


@dataclass
class CliResult:
    """Outcome of one CLI call; ``rc`` is None when it was killed at its timeout."""

    rc: int | None
    stdout: str
    stderr: str
    seconds: float

    def describe(self) -> str:
        """Exit status and the first line that explains it."""
        status = "timed out" if self.rc is None else f"exit {self.rc}"
        return f"{status}: {first(non_log_lines(self.stderr)) or last_line(self.stderr) or last_line(self.stdout)}"


@dataclass
class Home:
    """A throw-away ``TAGGER_HOME`` with its own SQLite store and temp folder."""

    path: Path
    token: str = field(default_factory=lambda: secrets.token_hex(16))

    def __post_init__(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "tmp").mkdir(exist_ok=True)

    @property
    def db(self) -> Path:
        return self.path / "mlflow.db"

    @property
    def uri(self) -> str:
        return f"sqlite:///{self.db}"

    def clone(self, path: Path) -> Home:
        """A new home at ``path`` whose store is a consistent copy of this one's (artifacts stay shared)."""
        home = Home(path, self.token)
        src, dst = sqlite3.connect(self.db), sqlite3.connect(home.db)
        try:
            src.backup(dst)
        finally:
            src.close()
            dst.close()
        return home

    def env(self) -> dict[str, str]:
        """Environment of every subprocess: this home's store, offline, no proxies, the admin token."""
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("MLFLOW_", "TAGGER_"))}
        for key in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
            env.pop(key, None)
        env.update(
            TAGGER_HOME=str(self.path),
            MLFLOW_TRACKING_URI=self.uri,
            TAGGER_ADMIN_TOKEN=self.token,
            TMPDIR=str(self.path / "tmp"),
            HF_HUB_OFFLINE="1",
            HF_DATASETS_OFFLINE="1",
            NO_PROXY="127.0.0.1,localhost",
            no_proxy="127.0.0.1,localhost",
        )
        return env


def run_cli(
    home: Home,
    args: list[str],
    cwd: Path | None = None,
    timeout: float = CLI_TIMEOUT_S,
    memory_limit: int | None = None,
    env_extra: dict[str, str] | None = None,
) -> CliResult:
    """Run ``tagger ARGS`` against ``home``, bounded by ``timeout`` (the process group is killed then) and,
    when given, by an address-space limit of ``memory_limit`` bytes (``prlimit``, which execs the command)."""
    start = time.monotonic()
    limit = ["prlimit", f"--as={memory_limit}", "--"] if memory_limit and shutil.which("prlimit") else []
    proc = PROCS.start(
        [*limit, *tagger_command(), *args],
        cwd=cwd or home.path,
        env={**home.env(), **(env_extra or {})},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
        rc: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        PROCS.kill(proc)
        out, err = proc.communicate(timeout=30)
        rc = None
    text = out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
    return CliResult(rc, text[0], text[1], round(time.monotonic() - start, 2))


def train_args(config: str, *overrides: str, data: Path | None = None) -> list[str]:
    """``train CONFIG`` without bootstrap, on ``data`` (the bench's slice) when given."""
    args = ["train", str(CONFIGS[config]), "--set", "evaluation.bootstrap_samples=0"]
    if data is not None:
        args += ["--set", f"data.train={data}"]
    for override in overrides:
        args += ["--set", override]
    return args


# --------------------------------------------------------------------------------------------------
# the store, read through MLflow

_STORE_LOCK = threading.Lock()


def store_has_schema(db: Path) -> bool:
    """True when the SQLite file exists and has MLflow's tables (read-only; never creates the store)."""
    if not db.is_file():
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as conn:
            names = {row[0] for row in conn.execute("select name from sqlite_master where type='table'")}
    except sqlite3.Error:
        return False
    return {"runs", "experiments"} <= names


def store_runs(home: Home, experiments: tuple[str, ...] | None = TASK_EXPERIMENTS) -> tuple[dict[str, str], str]:
    """``{run_id: status}`` of every run (all statuses) in ``experiments`` (None = all), and an error or ''."""
    if not store_has_schema(home.db):
        return {}, ""
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    with _STORE_LOCK:
        try:
            client = MlflowClient(tracking_uri=home.uri, registry_uri=home.uri)
            if experiments is None:
                ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
            else:
                found = [client.get_experiment_by_name(name) for name in experiments]
                ids = [e.experiment_id for e in found if e is not None]
            if not ids:
                return {}, ""
            runs = client.search_runs(ids, run_view_type=ViewType.ALL, max_results=50_000)
            return {r.info.run_id: r.info.status for r in runs}, ""
        except Exception as exc:  # noqa: BLE001 - a broken store is a result here, not a crash
            return {}, f"{type(exc).__name__}: {first(str(exc).splitlines())}"


def store_aliases(home: Home) -> dict[str, dict[str, str]]:
    """Registered model aliases (``{model: {alias: version}}``), to see whether a command changed them."""
    if not store_has_schema(home.db):
        return {}
    from mlflow.tracking import MlflowClient

    with _STORE_LOCK:
        try:
            client = MlflowClient(tracking_uri=home.uri, registry_uri=home.uri)
            return {m.name: dict(m.aliases) for m in client.search_registered_models()}
        except Exception as exc:  # noqa: BLE001
            return {"error": {"error": str(exc)[:200]}}


def dir_snapshot(folder: Path) -> dict[str, tuple[int, str]]:
    """``{relative path: (size, sha256)}`` of the regular files under ``folder``; folders (an empty output
    folder is a side effect too) as ``(-1, "dir")``; FIFOs and other special files by name only."""
    snapshot = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            snapshot[key] = (-2, "special")
        elif path.is_dir():
            snapshot[key] = (-1, "dir")
        else:
            snapshot[key] = (path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest())
    return snapshot


STORE_SIDE_FILES = ("-journal", "-wal", "-shm", ".lock")  # SQLite's journals; the lock file beside a store


def new_paths(folder: Path, before: set[str]) -> list[str]:
    """Files under ``folder`` that were not in ``before`` (folders, SQLite's journals and lock files aside)."""
    now = {str(p.relative_to(folder)) for p in folder.rglob("*") if not p.is_dir()}
    return sorted(p for p in now - before if not p.endswith(STORE_SIDE_FILES))


def path_set(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


# --------------------------------------------------------------------------------------------------
# the HTTP service


class Server:
    """``tagger serve`` on a free loopback port of ``home``; waited for until ``/readyz`` answers 200."""

    def __init__(self, home: Home, name: str) -> None:
        self.home = home
        self.sigterm_ok: bool | None = None  # set by stop(): did SIGTERM alone stop it?
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = home.path / f"serve-{name}.log"
        with self.log.open("wb") as out:
            self.proc = PROCS.start(
                [*tagger_command(), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                cwd=home.path,
                env=home.env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + SERVER_START_S
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if httpx.get(self.base + "/readyz", timeout=2, trust_env=False).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise BenchError(f"tagger serve did not start: {self.log_tail()}")

    def log_tail(self) -> str:
        return last_line(self.log.read_text("utf-8", "replace")) if self.log.exists() else ""

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 15 s; records in ``sigterm_ok`` whether SIGTERM was enough."""
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
            self.sigterm_ok = True
        except subprocess.TimeoutExpired:
            PROCS.kill(self.proc)
            self.proc.wait(timeout=10)
            self.sigterm_ok = False

    def admin_headers(self, token: str | None = None, content_type: str = "application/json") -> dict[str, str]:
        """Headers of a reload request: ``token`` None = the right token, '' = no Authorization header."""
        headers = {"Content-Type": content_type}
        if token != "":
            headers["Authorization"] = f"Bearer {token or self.home.token}"
        return headers


@contextlib.contextmanager
def serving(home: Home, name: str) -> Iterator[Server]:
    """A running server for the ``with`` block; stopped afterwards whatever happens."""
    server = Server(home, name)
    try:
        yield server
    finally:
        server.stop()


# --------------------------------------------------------------------------------------------------
# the bench: throw-away folders, data files, shared trained models


class Bench:
    """Throw-away root folder, the training slice, and the models home (trained and promoted once)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.data.mkdir(parents=True)
        lines = TRAIN_FILE.read_text("utf-8").splitlines()
        self.rows = [json.loads(line) for line in lines if line.strip()]
        self.seeds = [json.loads(line) for line in SEEDS_FILE.read_text("utf-8").splitlines() if line.strip()]
        self.slice_rows = self.rows[::SLICE_EVERY]
        self.slice = self.write_jsonl("train_slice.jsonl", self.slice_rows)
        self._models: tuple[Home, dict[str, str]] | None = None
        self._models_error = ""
        self._models_thread: threading.Thread | None = None
        self._home_numbers = itertools.count(1)
        self.options = parse_args([])  # main() replaces these with the command line's

    def home(self, name: str) -> Home:
        """A new, empty home (its store does not exist yet)."""
        return Home(self.path_for(name))

    def path_for(self, name: str) -> Path:
        """A new numbered folder name under the root (not created)."""
        return self.root / f"{next(self._home_numbers):02d}-{name}"

    def write_jsonl(self, name: str, rows: list[dict]) -> Path:
        path = self.data / name
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
        return path

    def write_bytes(self, name: str, content: bytes) -> Path:
        path = self.data / name
        path.write_bytes(content)
        return path

    def start_models(self) -> None:
        """Train and promote the shared models in a background thread (once), on their own store.

        Started before the sections that run one process at a time, so the second core is used.
        """
        if self._models_thread is None:
            self._models_thread = threading.Thread(target=self._prepare_models, name="models", daemon=True)
            self._models_thread.start()

    def models(self) -> tuple[Home, dict[str, str]]:
        """A home with a topic and a stance run, both promoted to champion; waits for the preparation."""
        self.start_models()
        assert self._models_thread is not None
        self._models_thread.join(timeout=4 * CLI_TIMEOUT_S)  # 2 trainings + 2 promotes, each bounded
        if self._models is None:
            raise BenchError(self._models_error or "the models were not ready in time")
        return self._models

    def _prepare_models(self) -> None:
        home = self.home("models")
        runs = {}
        try:
            for task, config in (("topic", "topic_logreg"), ("stance", "stance_logreg")):
                say(f"models: training {task} ({config}) ...")
                result = run_cli(home, train_args(config, data=self.slice))
                if result.rc != 0:
                    raise BenchError(f"training the {task} model failed: {result.describe()}")
                runs[task] = last_line(result.stdout)
            for task in ("topic", "stance"):
                result = run_cli(home, ["promote", "--task", task])
                if result.rc != 0:
                    raise BenchError(f"promote --task {task} failed: {result.describe()}")
        except BenchError as exc:
            self._models_error = str(exc)
            return
        say("models: topic and stance trained and promoted")
        self._models = (home, runs)


# --------------------------------------------------------------------------------------------------
# section 1: concurrent trainings


def training_mix() -> list[str]:
    """The configs of the 8 concurrent trainings: each of the four shipped TF-IDF configs twice."""
    names = list(CONFIGS)
    return [names[i % len(names)] for i in range(CONCURRENT_TRAININGS)]


def run_concurrently(bench: Bench, home: Home, label: str) -> list[dict]:
    """Start the training mix at once, wait (bounded), and return each process's config, exit and stderr."""
    logs = home.path / "logs"
    logs.mkdir(exist_ok=True)
    started = []
    for i, config in enumerate(training_mix()):
        err_path = logs / f"{label}-{i}-{config}.stderr"
        with err_path.open("wb") as err:
            proc = PROCS.start(
                [*tagger_command(), *train_args(config, data=bench.slice)],
                cwd=home.path,
                env=home.env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        started.append((config, proc, err_path))
    deadline = time.monotonic() + TRAIN_TIMEOUT_S
    results = []
    for config, proc, err_path in started:
        try:
            rc: int | None = proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            PROCS.kill(proc)
            proc.wait(timeout=30)
            rc = None
        results.append({"config": config, "exit": rc, "stderr": err_path.read_text("utf-8", "replace")})
    return results


def training_trial(bench: Bench, home: Home, label: str) -> dict:
    """One trial: 8 trainings at once on ``home``'s store; lost runs, exits, and a follow-up ``runs``."""
    store_existed = home.db.exists()
    before, before_error = store_runs(home)
    say(f"trainings/{label}: starting {CONCURRENT_TRAININGS} trainings at once (store exists: {store_existed})")
    start = time.monotonic()
    results = run_concurrently(bench, home, label)
    wall = round(time.monotonic() - start, 1)
    after, after_error = store_runs(home)
    new = {run_id: status for run_id, status in after.items() if run_id not in before}
    finished = sum(status == "FINISHED" for status in new.values())
    follow_up = run_cli(home, ["runs", "--task", "topic"])
    failures = [
        {
            "config": r["config"],
            "exit": r["exit"],
            "first_line": first(non_log_lines(r["stderr"])),
            "last_line": last_line(r["stderr"]),
        }
        for r in results
        if r["exit"] != 0
    ]
    exits = [r["exit"] for r in results]
    trial = {
        "store_existed": store_existed,
        "started": len(results),
        "exit_codes": exits,
        "finished": finished,
        "lost": len(results) - finished,
        "new_run_statuses": dict(Counter(new.values())),
        "wall_seconds": wall,
        "store_error": after_error or before_error or None,
        "failures": failures,
        "follow_up_runs_exit": follow_up.rc,
        "follow_up_runs_error": first(non_log_lines(follow_up.stderr)) if follow_up.rc != 0 else None,
    }
    trial["passed"] = trial["lost"] == 0 and all(rc == 0 for rc in exits) and follow_up.rc == 0 and not after_error
    say(
        f"trainings/{label}: finished {finished}/{len(results)}, exits {exits}, {wall} s, "
        f"runs exit {follow_up.rc} -> {'ok' if trial['passed'] else 'FAIL'}"
    )
    return trial


def section_trainings(bench: Bench) -> dict:
    """8 concurrent trainings on a new store, then 8 more on the same store."""
    home = bench.home("trainings")
    trials = {"new_store": training_trial(bench, home, "new_store"), "used_store": training_trial(bench, home, "used")}
    return {"trials": trials, "passed": all(t["passed"] for t in trials.values())}


# --------------------------------------------------------------------------------------------------
# section 2: kill -9


@dataclass(frozen=True)
class KillPhase:
    """Kill ``delay`` seconds after the first stderr line containing ``marker``."""

    name: str
    marker: str
    delay: float


# fit and logging first, so that the load-phase kill also hits a store in use (a new store has no
# experiment yet, and `runs` rightly refuses an experiment that does not exist)
KILL_PHASES = (
    KillPhase("fit", "training tfidf_svm ...", 1.0),
    KillPhase("logging", "logging model ...", 0.4),
    KillPhase("load", "loading and checking data ...", 0.3),
)


class StderrWatcher:
    """Reads a process's stderr line by line in a thread, remembering progress lines and the run id."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self.run_id: str | None = None
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen) -> None:
        for raw in proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._changed:
                self.lines.append(line)
                if match := RUN_LINE.search(line):
                    self.run_id = match.group(1)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, marker: str, timeout: float) -> bool:
        """Wait (bounded) until a line containing ``marker`` has been read, or stderr closes."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not any(marker in line for line in self.lines):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._thread.is_alive():
                    return False
                self._changed.wait(timeout=min(remaining, 0.5))
        return True

    def last_progress(self) -> str:
        with self._changed:
            progress = [line for line in self.lines if LOG_LINE.match(line)]
        return progress[-1] if progress else ""

    def join(self) -> None:
        self._thread.join(timeout=10)


def kill_at(bench: Bench, home: Home, phase: KillPhase) -> dict:
    """Start a topic SVM training, ``kill -9`` its pid in ``phase``; return what was seen at the kill."""
    target = KillTarget("train", train_args("topic_svm", data=bench.slice), phase.marker, phase.delay)
    return kill_command(home, target, f"train-{phase.name}")


def runs_all(home: Home, env_extra: dict[str, str] | None = None) -> tuple[CliResult, list[dict] | None]:
    """``tagger runs --task topic --all --json`` and its parsed rows (None when not JSON Lines)."""
    result = run_cli(home, ["runs", "--task", "topic", "--all", "--json"], env_extra=env_extra)
    try:
        rows = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    except json.JSONDecodeError:
        rows = None
    return result, rows


def check_after_kill(bench: Bench, home: Home, killed: dict) -> dict:
    """Store opens, killed run marked KILLED (or no run left RUNNING), and a new training finishes (the
    next commands share the killed one's TMPDIR, so they could clean up after it)."""
    same_tmp = {"TMPDIR": killed["tmpdir"]}
    listing, rows = runs_all(home, same_tmp)
    flag_missing = listing.rc == 2 and "no such option" in listing.stderr.lower()
    statuses = {row.get("run_id"): row.get("status") for row in rows or []}
    run_id = killed["run_id"]
    if run_id:
        marked = statuses.get(run_id) == "KILLED"
        seen_status = statuses.get(run_id, "not listed")
    else:
        marked = listing.rc == 0 and rows is not None and "RUNNING" not in statuses.values()
        seen_status = "no run was created"
    follow_up = run_cli(home, train_args("topic_svm", data=bench.slice), env_extra=same_tmp)
    follow_run = last_line(follow_up.stdout)
    in_store, store_error = store_runs(home)
    check = {
        "runs_all_exit": listing.rc,
        "runs_all_flag_missing": flag_missing,
        "runs_all_error": None if listing.rc == 0 else listing.describe(),
        "killed_run_status": seen_status,
        "killed_run_status_in_store": in_store.get(run_id) if run_id else None,
        "killed_run_marked": marked,
        "follow_up_exit": follow_up.rc,
        "follow_up_error": None if follow_up.rc == 0 else follow_up.describe(),
        "follow_up_status": in_store.get(follow_run),
        "store_error": store_error or None,
        "store_statuses": dict(Counter(in_store.values())),
        "tmp_entries_left": sorted(p.name for p in (home.path / "tmp").iterdir()),
    }
    check["store_opens"] = listing.rc == 0 and not store_error
    check["follow_up_finished"] = follow_up.rc == 0 and check["follow_up_status"] == "FINISHED"
    return check


def section_kill(bench: Bench) -> dict:
    """``kill -9`` of a training at data loading, fitting and logging, each followed by checks; then of
    ``cv``, ``sweep``, ``promote`` and ``tag-batch``."""
    quick = bench.options.quick
    home = bench.home("kill")
    phases = {}
    train_phases = KILL_PHASES[:1] if quick else KILL_PHASES
    if bench.options.kills and "train" not in bench.options.kills.split(","):
        train_phases = ()
    for phase in train_phases:
        say(f"kill/{phase.name}: training, kill -9 after '{phase.marker}' + {phase.delay} s")
        killed = kill_at(bench, home, phase)
        check = check_after_kill(bench, home, killed)
        result = {**killed, **check}
        result["tmp_entries_left"] = sorted(p.name for p in Path(killed["tmpdir"]).iterdir())
        result["running_after_next_command"] = check["store_statuses"].get("RUNNING", 0)
        result["passed"] = bool(
            killed["in_phase"]
            and check["store_opens"]
            and check["killed_run_marked"]
            and check["follow_up_finished"]
            and not killed["orphans_after_10s"]
        )
        phases[phase.name] = result
        say(
            f"kill/{phase.name}: at '{killed['last_progress_line']}', run {killed['run_id']} -> "
            f"{check['killed_run_status']}; runs --all exit {check['runs_all_exit']}; "
            f"follow-up {check['follow_up_status']} -> {'ok' if result['passed'] else 'FAIL'}"
        )
    commands: dict[str, dict] = {}
    if phases:
        commands["train"] = {"phases": phases, "passed": all(p["passed"] for p in phases.values())}
    others: list[tuple[str, Callable[[], dict]]] = [
        ("cv", lambda: kill_cv(bench)),
        ("sweep", lambda: kill_sweep(bench)),
        ("promote", lambda: kill_promote(bench, quick)),
        ("tag_batch", lambda: kill_batch(bench, quick)),
    ]
    wanted = set(bench.options.kills.split(",")) if bench.options.kills else None
    for name, run in others:
        if (quick and name == "sweep") or (wanted is not None and name not in wanted):
            continue
        try:
            commands[name] = run()
        except BenchError as exc:
            commands[name] = {"passed": False, "error": str(exc)}
        if name in ("cv", "sweep"):
            r = commands[name]
            say(
                f"kill/{name}: {len(r.get('orphans_after_10s', []))} orphan(s), "
                f"{r.get('running_after_next_command')} RUNNING after the next command, "
                f"{r.get('runs_without_pid_tag')} killed run(s) without pid tag -> {'ok' if r['passed'] else 'FAIL'}"
            )
    return {"phases": phases, "commands": commands, "totals": kill_totals(commands), "passed": all(
        c["passed"] for c in commands.values())}  # fmt: skip


def kill_results(commands: dict[str, dict]) -> list[dict]:
    """Every single kill's result (a command's phases, or the command itself)."""
    found = []
    for command in commands.values():
        found += list(command["phases"].values()) if "phases" in command else [command]
    return found


def kill_totals(commands: dict[str, dict]) -> dict:
    """The goal figures over every kill: orphans, RUNNING runs, unreadable parts, duplicates, temp left."""
    results = kill_results(commands)
    unreadable = 0
    for r in results:
        for key in ("after_kill", "after_rerun"):
            unreadable += len((r.get(key) or {}).get("unreadable_parts", []))
    return {
        "kills": len(results),
        "orphan_processes_after_10s": sum(len(r.get("orphans_after_10s", [])) for r in results),
        "running_runs_after_next_command": sum(r.get("running_after_next_command") or 0 for r in results),
        "unreadable_output_parts": unreadable,
        "duplicate_registry_versions": sum(len(r.get("duplicate_versions", [])) for r in results),
        "temporary_entries_left": sum(len(r.get("tmp_entries_left", [])) for r in results),
        "errors": [r["error"] for r in results if "error" in r],
    }


# kill -9 of cv, sweep, promote and tag-batch (issue 20, items 2 and 9): one pid killed, as `kill -9 PID`
# does (not its process group), then orphans, RUNNING runs, unreadable parts, temp folders, duplicates


def session_processes(sid: int) -> list[dict]:
    """Live processes of session ``sid`` (every command here starts its own session): what a killed
    command left behind, whoever their parent is now."""
    found = []
    for proc in psutil.process_iter(["pid", "name", "cmdline", "status", "memory_info"]):
        try:
            if os.getsid(proc.pid) != sid or proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
        except (ProcessLookupError, PermissionError):
            continue
        rss = proc.info["memory_info"].rss / 2**20 if proc.info["memory_info"] else 0.0
        found.append(
            {
                "pid": proc.pid,
                "cmdline": " ".join(proc.info["cmdline"] or [proc.info["name"] or ""])[-160:],
                "rss_mb": round(rss),
            }
        )
    return found


def reap_session(sid: int) -> None:
    """SIGKILL what is left of session ``sid`` (processes this bench started, directly or not)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(sid, signal.SIGKILL)
    for left in session_processes(sid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(left["pid"], signal.SIGKILL)


def sqlite_count(db: Path, sql: str, *params: Any) -> int:
    """One count from the store, read-only (0 while the table does not exist)."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn:
            return int(conn.execute(sql, params).fetchone()[0])
    except sqlite3.Error:
        return 0


@dataclass
class KillTarget:
    """A command to kill: at the first stderr line containing ``marker`` (or when ``ready()`` turns true),
    after ``delay`` seconds."""

    name: str
    args: list[str]
    marker: str | None
    delay: float
    ready: Callable[[], bool] | None = None
    timeout: float = CLI_TIMEOUT_S


def kill_command(home: Home, target: KillTarget, label: str) -> dict:
    """Start ``target`` with a TMPDIR of its own, ``kill -9`` its pid in the chosen phase, wait
    ORPHAN_WAIT_S, and report what is left: processes of its session, and entries in its TMPDIR."""
    tmp = home.path / f"tmp-{label}"
    tmp.mkdir()
    env = {**home.env(), "TMPDIR": str(tmp)}
    proc = PROCS.start(
        [*tagger_command(), *target.args],
        cwd=home.path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    watcher = StderrWatcher(proc)
    start = time.monotonic()
    reached = False
    if target.ready is not None:
        while time.monotonic() - start < target.timeout and proc.poll() is None:
            if target.ready():
                reached = True
                break
            time.sleep(0.05)
    elif target.marker is not None:
        reached = watcher.wait_for(target.marker, timeout=target.timeout)
    if reached:
        time.sleep(target.delay)
    alive = proc.poll() is None
    children = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)] if alive else []
    at_kill = watcher.last_progress()
    if alive:
        os.kill(proc.pid, signal.SIGKILL)  # the pid only, as `kill -9 PID`: its children are its own business
    proc.wait(timeout=30)
    time.sleep(ORPHAN_WAIT_S)
    orphans = session_processes(proc.pid)
    reap_session(proc.pid)
    watcher.join()
    return {
        "marker_seen": reached,
        "killed_while_running": alive,
        "in_phase": bool(reached and alive and (target.marker is None or target.marker in at_kill)),
        "seconds_to_kill": round(time.monotonic() - start - ORPHAN_WAIT_S, 1),
        "last_progress_line": at_kill[9:].strip(),
        "exit_before_kill": None if alive else proc.returncode,
        "stderr_tail": None if alive else last_line("\n".join(watcher.lines)),
        "children_at_kill": len(children),
        "orphans_after_10s": orphans,
        "tmp_entries_after_kill": sorted(p.name for p in tmp.iterdir()),
        "tmpdir": str(tmp),
        "run_id": watcher.run_id,
    }


def running_after_next(home: Home, tmpdir: str, task: str = "topic") -> dict:
    """The next command (``tagger runs --all``, which marks runs of dead processes KILLED; with the killed
    command's TMPDIR), then every run in the store that is still RUNNING."""
    listing = run_cli(home, ["runs", "--task", task, "--all", "--json"], env_extra={"TMPDIR": tmpdir})
    statuses, error = store_runs(home, None)
    running = sorted(run for run, status in statuses.items() if status == "RUNNING")
    return {
        "next_command_exit": listing.rc,
        "next_command_error": None if listing.rc == 0 else listing.describe(),
        "running_after_next_command": len(running),
        "running_run_ids": running[:10],
        "store_statuses": dict(Counter(statuses.values())),
        "store_error": error or None,
    }


def missing_pid_tags(home: Home) -> int:
    """RUNNING or KILLED runs without the ``tagger.pid`` tag (a stale-run check cannot end those)."""
    return sqlite_count(
        home.db,
        "select count(*) from runs r where r.status in ('RUNNING', 'KILLED') and not exists "
        "(select 1 from tags t where t.run_uuid = r.run_uuid and t.key = 'tagger.pid')",
    )


def kill_cv(bench: Bench) -> dict:
    """``tagger cv`` killed during its second fold."""
    home = bench.home("kill-cv")
    args = [
        "cv",
        str(CONFIGS["topic_logreg"]),
        "--folds",
        "3",
        "--set",
        "evaluation.bootstrap_samples=0",
        "--set",
        f"data.train={bench.slice}",
    ]
    say("kill/cv: tagger cv, kill -9 in fold 2/3")
    killed = kill_command(home, KillTarget("cv", args, "fold 2/3", 0.5), "cv")
    after = running_after_next(home, killed["tmpdir"])
    result = {**killed, **after, "runs_without_pid_tag": missing_pid_tags(home)}
    result["tmp_entries_left"] = sorted(p.name for p in Path(killed["tmpdir"]).iterdir())
    result["passed"] = bool(
        killed["killed_while_running"]
        and not killed["orphans_after_10s"]
        and after["next_command_exit"] == 0
        and after["running_after_next_command"] == 0
    )
    return result


def kill_sweep(bench: Bench) -> dict:
    """``tagger sweep --jobs 2`` killed while its workers run trials: the workers must not outlive it."""
    home = bench.home("kill-sweep")
    space = bench.data / "kill_space.yaml"
    space.write_text("params:\n  model.params.C: {type: float, low: 0.5, high: 2.0}\n", "utf-8")
    args = [
        "sweep",
        str(CONFIGS["topic_logreg"]),
        "--space",
        str(space),
        "--trials",
        "6",
        "--jobs",
        "2",
        "--set",
        "evaluation.bootstrap_samples=0",
        "--set",
        f"data.train={bench.slice}",
        "--set",
        "split.folds=3",
    ]
    say("kill/sweep: tagger sweep --jobs 2, kill -9 of the parent 1 s after the first trial ended")
    killed = kill_command(home, KillTarget("sweep", args, " cv/f1_macro_mean 0.", 1.0), "sweep")
    after = running_after_next(home, killed["tmpdir"])
    result = {**killed, **after, "runs_without_pid_tag": missing_pid_tags(home)}
    result["tmp_entries_left"] = sorted(p.name for p in Path(killed["tmpdir"]).iterdir())
    result["passed"] = bool(
        killed["killed_while_running"]
        and not killed["orphans_after_10s"]
        and after["next_command_exit"] == 0
        and after["running_after_next_command"] == 0
    )
    return result


def registry_state(home: Home) -> dict:
    """Versions and aliases of every registered model, and the duplicates: two versions of a task model
    from one run, or two versions of the combined model with the same topic and stance versions."""
    from mlflow.tracking import MlflowClient

    with _STORE_LOCK:
        client = MlflowClient(tracking_uri=home.uri, registry_uri=home.uri)
        state, duplicates = {}, []
        for model in client.search_registered_models():
            versions = client.search_model_versions(f"name='{model.name}'")
            if model.name == "tagger":
                keys = [(v.tags.get("topic_version"), v.tags.get("stance_version")) for v in versions]
            else:
                keys = [v.run_id for v in versions]
            duplicates += [(f"{model.name}: {key}", n) for key, n in Counter(keys).items() if n > 1]
            state[model.name] = {"versions": len(versions), "aliases": dict(model.aliases)}
    return {"registry": state, "duplicate_versions": duplicates}


def kill_promote(bench: Bench, quick: bool) -> dict:
    """``tagger promote`` killed right after it registered the version, and while it packages the
    combined model; the next promote must complete it without a duplicate, and set ``previous``."""
    models, _ = bench.models()
    home = models.clone(bench.path_for("kill-promote"))
    phases = {}
    plan = [
        ("version_created", "select count(*) from model_versions where name = 'tagger-topic'", 0.0),
        (
            "bundle",
            "select count(*) from runs r join experiments e on r.experiment_id = e.experiment_id "
            "where e.name = 'tagger-bundle'",
            1.0,
        ),
    ]
    for name, sql, delay in plan[:1] if quick else plan:
        say(f"kill/promote/{name}: a new best topic run, then promote, kill -9 when the store shows it")
        trained = run_cli(home, train_args("topic_logreg", data=bench.slice))  # ties the champion; newer wins
        if trained.rc != 0:
            phases[name] = {"passed": False, "error": f"training failed: {trained.describe()}"}
            continue
        before = sqlite_count(home.db, sql)
        duplicates_before = dict(registry_state(home)["duplicate_versions"])
        target = KillTarget(
            "promote",
            ["promote", "--task", "topic"],
            None,
            delay,
            ready=lambda sql=sql, before=before: sqlite_count(home.db, sql) > before,
        )
        killed = kill_command(home, target, f"promote-{name}")
        following = run_cli(home, ["promote", "--task", "topic"], env_extra={"TMPDIR": killed["tmpdir"]})
        registry = registry_state(home)
        registry["duplicate_versions"] = [  # new in this phase
            f"{key} registered {n} times"
            for key, n in registry["duplicate_versions"]
            if n > duplicates_before.get(key, 1)
        ]
        aliases = registry["registry"]
        missing_previous = [
            m for m in ("tagger-topic", "tagger") if "previous" not in aliases.get(m, {}).get("aliases", {})
        ]
        result = {
            **killed,
            "next_promote_exit": following.rc,
            "next_promote_output": last_line(following.stdout) or following.describe(),
            **registry,
            "previous_alias_missing": missing_previous,
            "tmp_entries_left": sorted(p.name for p in Path(killed["tmpdir"]).iterdir()),
        }
        result["passed"] = bool(
            killed["marker_seen"]
            and killed["killed_while_running"]
            and not killed["orphans_after_10s"]
            and following.rc == 0
            and not registry["duplicate_versions"]
            and not missing_previous
        )
        phases[name] = result
        say(
            f"kill/promote/{name}: next promote exit {following.rc}, duplicates {registry['duplicate_versions']}, "
            f"previous missing {missing_previous} -> {'ok' if result['passed'] else 'FAIL'}"
        )
    return {"phases": phases, "passed": bool(phases) and all(p["passed"] for p in phases.values())}


def parquet_parts(folder: Path) -> dict:
    """Every ``*.parquet`` under ``folder`` read with pyarrow: visible parts (no path component starting with
    '.' or '_', which Parquet readers skip, e.g. a ``_temporary/`` folder), unreadable ones, and rows."""
    import pyarrow.parquet as pq

    def hidden(path: Path) -> bool:
        return any(part.startswith((".", "_")) for part in path.relative_to(folder).parts)

    parts = sorted(p for p in folder.rglob("*.parquet") if not hidden(p)) if folder.exists() else []
    unreadable, rows = [], 0
    for part in parts:
        try:
            rows += pq.read_table(part).num_rows
        except Exception as exc:  # noqa: BLE001 - an unreadable part is the result
            unreadable.append(f"{part.name}: {type(exc).__name__}: {first(str(exc).splitlines(), 120)}")
    names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if hidden(p)) if folder.exists() else []
    return {"parts": len(parts), "unreadable_parts": unreadable, "rows": rows, "hidden_entries": names[:10]}


BATCH_KILL_ROWS = 120_000


def kill_batch(bench: Bench, quick: bool) -> dict:
    """``tagger tag-batch --workers 2`` killed while its workers load the model, and mid-tagging."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    models, _ = bench.models()
    home = models.clone(bench.path_for("kill-batch"))
    texts = [r["text"] for r in bench.rows]
    rows = BATCH_KILL_ROWS // (4 if quick else 1)
    source = home.path / "archive.parquet"
    pq.write_table(pa.table({"text": [f"{texts[i % len(texts)]} ({i})" for i in range(rows)]}), source)
    phases = {}
    plan = [("loading", None, 3.0), ("tagging", "tagged ", 1.0)]
    for name, marker, delay in plan[1:] if quick else plan:
        output = home.path / f"tagged-{name}"
        args = ["tag-batch", str(source), str(output), "--workers", "2", "--chunk-size", "10000"]
        say(
            f"kill/tag-batch/{name}: {rows} rows, kill -9 "
            + (f"after '{marker}' + {delay} s" if marker else f"{delay} s after the start")
        )
        target = KillTarget("tag-batch", args, marker, delay, ready=(lambda: True) if marker is None else None)
        killed = kill_command(home, target, f"batch-{name}")
        after_kill = parquet_parts(output)
        rerun_env_tmp = Path(
            killed["tmpdir"]
        )  # the re-run gets the same TMPDIR, so it may clean up after the killed one
        rerun = run_cli(home, args, timeout=CLI_TIMEOUT_S, cwd=home.path, env_extra={"TMPDIR": str(rerun_env_tmp)})
        after_rerun = parquet_parts(output)
        result = {
            **killed,
            "after_kill": after_kill,
            "rerun_exit": rerun.rc,
            "rerun_message": rerun.describe() if rerun.rc != 0 else (log_lines(rerun.stderr) or [""])[0][9:][:200],
            "after_rerun": after_rerun,
            "rows_expected": rows,
            "tmp_entries_left": sorted(p.name for p in rerun_env_tmp.iterdir()),
        }
        result["passed"] = bool(
            killed["killed_while_running"]
            and not killed["orphans_after_10s"]
            and not after_kill["unreadable_parts"]
            and not result["tmp_entries_left"]
            and rerun.rc == 0
            and not after_rerun["unreadable_parts"]
            and after_rerun["rows"] == rows
        )
        phases[name] = result
        say(
            f"kill/tag-batch/{name}: {len(killed['orphans_after_10s'])} orphan(s), unreadable after kill "
            f"{len(after_kill['unreadable_parts'])}, temp left {result['tmp_entries_left']}, re-run exit "
            f"{rerun.rc} with {after_rerun['rows']}/{rows} rows -> {'ok' if result['passed'] else 'FAIL'}"
        )
    return {"phases": phases, "passed": bool(phases) and all(p["passed"] for p in phases.values())}


# --------------------------------------------------------------------------------------------------
# section 3: bad inputs


@dataclass
class CliCase:
    """A CLI call that must fail cleanly: exit 2, one ``error:`` line, no traceback, no side effects, an
    answer within the hang limit; or, with ``expect="success"``, a call the CLI must accept (exit 0).

    ``forbidden``: strings that must not appear in stdout or stderr (a secret file's marker line);
    ``mention``: strings the error line must contain (e.g. the line number of the bad row).
    """

    group: str
    name: str
    args: list[str]
    timeout: float | None = None  # None: the hang limit (errors) or CLI_TIMEOUT_S (expected successes)
    must_not_exist: list[Path] = field(default_factory=list)
    setup: Callable[[Path], None] | None = None  # prepares the case's working folder
    expect: str = "error"
    forbidden: list[str] = field(default_factory=list)
    mention: list[str] = field(default_factory=list)


@dataclass
class CaseResult:
    group: str
    name: str
    expected: str
    got: str
    ok: bool
    seconds: float
    log_lines: int = 0
    side_effects: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    traceback: bool = False
    hang: bool = False
    leaked: bool = False
    limit_s: float | None = None  # the hang limit this case ran under (scaled by the machine's load)

    def as_dict(self) -> dict:
        return self.__dict__.copy()


EXPECTED_CLI = "exit 2, one 'error:' line, no traceback, no side effects, answered within the hang limit"
EXPECTED_SUCCESS = "exit 0 (the CLI must accept this input), no traceback"


def judge_cli(case: CliCase, result: CliResult, side_effects: list[str], hang_limit: float) -> CaseResult:
    """Compare one CLI outcome with the contract for user errors (or, for ``expect="success"``, exit 0)."""
    others = non_log_lines(result.stderr)
    traceback = "Traceback" in result.stderr
    output = result.stdout + result.stderr
    leaked = [s for s in case.forbidden if s in output]
    hang = result.rc is None or (case.expect == "error" and result.seconds > hang_limit)
    if case.expect == "success":
        ok = result.rc == 0 and not traceback and not leaked
        expected = EXPECTED_SUCCESS
    else:
        one_line = len(others) == 1 and others[0].startswith("error:") and len(others[0]) > len("error:")
        mentioned = all(m in others[0] for m in case.mention) if one_line else False
        ok = result.rc == 2 and one_line and mentioned and not traceback and not side_effects and not leaked
        ok = ok and not hang
        expected = EXPECTED_CLI + (f"; the error names {case.mention}" if case.mention else "")
    status = f"hang: killed after {result.seconds:g} s" if result.rc is None else f"exit {result.rc}"
    got = f"{status}; {len(others)} non-log stderr line(s)"
    if traceback:
        got += " incl. Traceback"
    if hang and result.rc is not None:
        got += f"; answered only after {result.seconds:g} s (limit {hang_limit:g} s)"
    if others:
        got += f"; first: {others[0][:240]}"
        if len(others) > 1:
            got += f" | last: {others[-1][:160]}"
    if leaked:
        got += "; output shows the forbidden file's contents"
    if case.mention and case.expect == "error" and others and not all(m in others[0] for m in case.mention):
        got += f"; the error does not name {case.mention}"
    if side_effects:
        got += f"; side effects: {', '.join(side_effects)}"
    return CaseResult(
        case.group,
        case.name,
        expected,
        got,
        ok,
        result.seconds,
        len(log_lines(result.stderr)),
        side_effects if case.expect == "error" else [],
        case.args,
        traceback,
        hang,
        bool(leaked),
        hang_limit,
    )


def load_scaled(limit: float) -> float:
    """``limit`` times the machine's 1-minute load per core (at least 1, at most MAX_LOAD_SCALE): on a
    shared machine at load 8 on 2 cores a command that answers in 3 s when idle takes 8-10 s, which is
    not a hang; a real hang (a FIFO, an endless loop) runs past any limit."""
    load = os.getloadavg()[0] / (os.cpu_count() or 1)
    return round(limit * min(MAX_LOAD_SCALE, max(1.0, load)), 1)


def run_cli_case(
    home: Home, case: CliCase, work: Path, snapshot_store: bool = True, hang_limit: float = HANG_LIMIT_S
) -> CaseResult:
    """Run ``case`` in its own working folder and check the result and the side effects: new runs, changed
    aliases, files written or changed in the working folder, new files anywhere in the home (its store,
    temp folder, default sweep storage ...), and the paths the case names."""
    work.mkdir(parents=True)
    if case.setup:
        case.setup(work)
    files_before = dir_snapshot(work)
    home_before = path_set(home.path)
    runs_before, _ = store_runs(home, None)
    aliases_before = store_aliases(home) if snapshot_store else {}
    existed = [p for p in case.must_not_exist if p.exists()]
    hang_limit = load_scaled(hang_limit)
    timeout = case.timeout or (hang_limit if case.expect == "error" else CLI_TIMEOUT_S)
    result = run_cli(home, case.args, cwd=work, timeout=timeout, memory_limit=CASE_MEMORY_BYTES)
    effects = []
    runs_after, _ = store_runs(home, None)
    new_runs = {k: v for k, v in runs_after.items() if k not in runs_before}
    if new_runs:
        effects.append(f"{len(new_runs)} new run(s) {dict(Counter(new_runs.values()))}")
    if snapshot_store and store_aliases(home) != aliases_before:
        effects.append("registered model aliases changed")
    if dir_snapshot(work) != files_before:
        effects.append("files written or changed in the working folder")
    created = [p for p in new_paths(home.path, home_before) if not p.startswith("work")]
    if created:
        effects.append(f"created in the home: {', '.join(created[:4])}{' ...' if len(created) > 4 else ''}")
    effects += [f"{p} created" for p in case.must_not_exist if p.exists() and p not in existed]
    return judge_cli(case, result, effects, hang_limit)


def config_cases(bench: Bench) -> list[CliCase]:
    """Bad configs and ``--set`` overrides (16)."""
    d = bench.data
    base = str(REPO / "configs/topic/base.yaml")
    (d / "cfg_missing_required.yaml").write_text(f"extends: {base}\n", "utf-8")
    (d / "cfg_bad.yaml").write_text("task: [topic, multilabel\nmodel: {family: tfidf_logreg\n", "utf-8")
    (d / "cfg_circular_a.yaml").write_text("extends: cfg_circular_b.yaml\nmodel: {family: tfidf_logreg}\n", "utf-8")
    (d / "cfg_circular_b.yaml").write_text("extends: cfg_circular_a.yaml\nseed: 1\n", "utf-8")
    (d / "cfg_dir").mkdir(exist_ok=True)
    fast = ["--set", "evaluation.bootstrap_samples=0", "--set", f"data.train={bench.slice}"]

    def topic(*overrides: str, config: str = "topic_logreg") -> list[str]:
        return train_args(config, *overrides, data=bench.slice)

    return [
        CliCase("config", "unknown key", topic("split.dev_fractoin=0.3")),
        CliCase("config", "wrong type", topic("split.dev_fraction=abc")),
        CliCase(
            "config", "missing required key (model.family)", ["train", str(d / "cfg_missing_required.yaml"), *fast]
        ),
        CliCase("config", "bad YAML file", ["train", str(d / "cfg_bad.yaml"), *fast]),
        CliCase("config", "--set with bad YAML", topic("model.params.C=[1,")),
        CliCase("config", "--set without '='", topic("model.params.C")),
        CliCase("config", "config path is a directory", ["train", str(d / "cfg_dir"), *fast]),
        CliCase("config", "missing config file", ["train", str(d / "no_such_config.yaml"), *fast]),
        CliCase("config", "unknown model family", topic("model.family=no_such_family")),
        CliCase("config", "word_ngram_range [2, 1]", topic("model.params.word_ngram_range=[2, 1]")),
        CliCase("config", "char_ngram_range [0, 5]", topic("model.params.char_ngram_range=[0, 5]")),
        CliCase("config", "min_df larger than the corpus", topic("model.params.min_df=100000")),
        CliCase("config", "calibration_folds 5000", topic("model.params.calibration_folds=5000", config="topic_svm")),
        CliCase("config", "dev_fraction 1.5", topic("split.dev_fraction=1.5")),
        CliCase("config", "unknown encoding", topic("data.encoding=klingon-8")),
        CliCase("config", "circular extends", ["train", str(d / "cfg_circular_a.yaml"), *fast]),
    ]


def data_files(bench: Bench) -> dict[str, Path]:
    """Bad training files, each otherwise like the slice."""
    rows = [dict(r) for r in bench.slice_rows]
    good = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    lines = good.splitlines(keepends=True)

    def changed(name: str, index: int, **fields: Any) -> Path:
        copy = [dict(r) for r in rows]
        copy[index].update(fields)
        return bench.write_jsonl(name, copy)

    missing_target = [dict(r) for r in rows]
    del missing_target[7]["target"]
    leak = [
        {**s, "id": f"leak-{i}", "doc_id": "leak-doc"} for i, s in enumerate(bench.seeds[:5])
    ]  # copies of evaluation sentences
    huge = {**rows[0], "id": "huge-1", "text": "Iran and Iraq signed a deal " * (5_000_000 // 28)}
    header = "id\tdoc_id\ttext\ttopics\n"
    tsv = header + "".join(f"{r['id']}\t{r['doc_id']}\t{r['text']}\t{';'.join(r['topics'])}\n" for r in rows)
    return {
        "missing": bench.data / "no_such_file.jsonl",
        "empty": bench.write_bytes("empty.jsonl", b""),
        "non_utf8": bench.write_bytes(
            "non_utf8.jsonl",
            b"".join(lines[:20]) + b'{"id": "x-1", "text": "caf\xe9 \xff\xfe"}\n' + b"".join(lines[20:]),
        ),
        "invalid_json": bench.write_bytes("invalid_json.jsonl", b"".join(lines[:5]) + b'{"id": "x-2", "text": \n'),
        "label_outside": changed("label_outside.jsonl", 3, topics=["sports"]),
        "duplicate_id": changed("duplicate_id.jsonl", 10, id=rows[0]["id"]),
        "id_null": changed("id_null.jsonl", 4, id=None),
        "empty_text": changed("empty_text.jsonl", 6, text=""),
        "missing_target": bench.write_jsonl("missing_target.jsonl", missing_target),
        "one_class": bench.write_jsonl("one_class.jsonl", [{**r, "stance": "neutral"} for r in rows]),
        "three_rows": bench.write_jsonl("three_rows.jsonl", rows[:3]),
        "no_topics": bench.write_jsonl("no_topics.jsonl", [{**r, "topics": []} for r in rows]),
        "huge_line": bench.write_jsonl("huge_line.jsonl", [*rows, huge]),
        "wrong_delimiter": bench.write_bytes("wrong_delimiter.csv", tsv.encode()),
        "text_parquet": bench.write_bytes("text.parquet", good),
        "leakage": bench.write_jsonl("leakage.jsonl", [*rows, *leak]),
    }


def data_cases(bench: Bench) -> list[CliCase]:
    """Bad training data (16)."""
    f = data_files(bench)

    def topic(path: Path, *overrides: str, config: str = "topic_logreg") -> list[str]:
        return train_args(config, *overrides, data=path)

    return [
        CliCase("data", "missing train file", topic(f["missing"])),
        CliCase("data", "empty file", topic(f["empty"])),
        CliCase("data", "non-UTF-8 bytes", topic(f["non_utf8"])),
        CliCase("data", "invalid JSON line", topic(f["invalid_json"])),
        CliCase("data", "label outside the schema", topic(f["label_outside"])),
        CliCase("data", "duplicate id", topic(f["duplicate_id"])),
        CliCase("data", '"id": null', topic(f["id_null"])),
        CliCase("data", "empty text", topic(f["empty_text"])),
        CliCase("data", "missing target in a stance file", topic(f["missing_target"], config="stance_logreg")),
        CliCase("data", "one-class stance file", topic(f["one_class"], config="stance_logreg")),
        CliCase("data", "3-row training file", topic(f["three_rows"])),
        CliCase("data", "topic file with no topics at all", topic(f["no_topics"])),
        CliCase("data", "5 MB single text line", topic(f["huge_line"])),
        CliCase(
            "data", "wrong CSV delimiter (tab-separated .csv)", topic(f["wrong_delimiter"], "data.label_separator=;")
        ),
        CliCase("data", ".parquet that is text", topic(f["text_parquet"])),
        CliCase("data", "training data copies seed sentences (leakage)", topic(f["leakage"])),
    ]


# round 2 of the bad inputs (issue 20): special files, anchor bombs, numeric ranges, encodings, paths

SECRET_MARKER = f"tagger-bench-secret-{secrets.token_hex(8)}"  # every line of the "secret" file holds it


class EvilPickle:
    """Unpickling this creates ``marker`` (a folder): proof that a model's pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.makedirs, (str(self.marker),))


def evil_model(folder: Path, marker: Path) -> Path:
    """A pyfunc model folder whose ``python_model.pkl`` creates ``marker`` when loaded."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "MLmodel").write_text(
        "flavors:\n  python_function:\n    loader_module: mlflow.pyfunc.model\n    python_model: python_model.pkl\n"
        f"    python_version: {sys.version_info.major}.{sys.version_info.minor}.0\n"
        "    cloudpickle_version: 3.0.0\nmodel_uuid: 0123456789abcdef0123456789abcdef\n",
        "utf-8",
    )
    import pickle

    (folder / "python_model.pkl").write_bytes(pickle.dumps(EvilPickle(marker)))
    return folder


def anchor_bomb(levels: int = 9, width: int = 9) -> str:
    """A billion-laughs YAML mapping (about 550 bytes): ``a8`` expands to width**levels strings."""
    lines = [f"a0: &a0 [{', '.join(['lol'] * width)}]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def flow_anchor_bomb(levels: int = 9, width: int = 9) -> str:
    """The same bomb as one YAML flow value (for a config key or a ``--set``)."""
    parts = [f"&a0 [{', '.join(['lol'] * width)}]"]
    parts += [f"&a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
    return "[" + ", ".join(parts) + "]"


def special_inputs(bench: Bench) -> dict[str, Path]:
    """Files no command should read as data: a folder, FIFOs, a secret file, binary, bombs (made once)."""
    d = bench.data / "special"
    if d.exists():
        return {p.name: p for p in d.iterdir()}
    d.mkdir()
    (d / "a_folder").mkdir()
    for name in ("fifo.yaml", "fifo.jsonl", "fifo.txt", "fifo.token"):
        os.mkfifo(d / name)
    (d / "secret.txt").write_text(
        "".join(f"user{i}:$6${SECRET_MARKER}-{i}$x:19000:0:99999:7:::\n" for i in range(40)), "utf-8"
    )
    (d / "binary.bin").write_bytes(bytes(random.Random(5).randrange(256) for _ in range(4096)))
    (d / "non_utf8.yaml").write_bytes(b"seed: 13\ntask: {name: caf\xe9\xff}\n")
    (d / "empty.yaml").write_bytes(b"")
    (d / "list.yaml").write_text("- task\n- data\n", "utf-8")
    (d / "scalar.yaml").write_text("just a string\n", "utf-8")
    (d / "bomb.yaml").write_text(anchor_bomb(), "utf-8")
    (d / "nul.yaml").write_bytes(b"seed: 13\x00\nmodel: {family: tfidf_logreg}\n")
    with (d / "huge.yaml").open("w", encoding="utf-8") as out:  # 64 MB of comments, then a valid key
        line = "# " + "x" * 1022 + "\n"
        for _ in range(64 * 1024):
            out.write(line)
        out.write("seed: 13\n")
    short = d / "short.token"
    short.write_text("tooshort\n", "utf-8")
    return {p.name: p for p in d.iterdir()}


def config_cases_round2(bench: Bench, sp: dict[str, Path]) -> list[CliCase]:
    """Configs that must fail before anything runs (issue 20, items 5 to 8): bombs, special files, ranges."""
    d = bench.data
    topic_cfg = CONFIGS["topic_logreg"]
    fast = ["--set", "evaluation.bootstrap_samples=0", "--set", f"data.train={bench.slice}"]
    marker = bench.root / "markers" / "config_python_tag"

    def cfg(name: str, text: str) -> str:
        path = d / name
        path.write_text(text, "utf-8")
        return str(path)

    def extends(name: str, target: str) -> list[str]:
        return ["train", cfg(name, f"extends: {json.dumps(target)}\nseed: 1\n"), *fast]

    def topic(*overrides: str) -> list[str]:
        return train_args("topic_logreg", *overrides, data=bench.slice)

    def train_file(key: str) -> list[str]:
        return ["train", str(sp[key]), *fast]

    bomb_value = cfg("cfg_bomb_value.yaml", f"extends: {topic_cfg}\nmodel:\n  params:\n    C: {flow_anchor_bomb()}\n")
    python_tag = cfg(
        "cfg_python_tag.yaml", f"extends: {topic_cfg}\nseed: !!python/object/apply:os.makedirs ['{marker}']\n"
    )
    self_loop = d / "cfg_self.yaml"
    self_loop.write_text("extends: cfg_self.yaml\nseed: 1\n", "utf-8")
    secret_forbidden = [SECRET_MARKER]
    cases = [
        CliCase("config", "YAML anchor bomb (billion laughs) as the config", train_file("bomb.yaml")),
        CliCase("config", "YAML anchor bomb in model.params.C", ["train", bomb_value, *fast]),
        CliCase("config", "YAML anchor bomb in a --set value", topic(f"model.params.C={flow_anchor_bomb()}")),
        CliCase("config", "!!python/object/apply tag", ["train", python_tag, *fast], must_not_exist=[marker]),
        CliCase("config", "extends: '' (empty)", extends("cfg_ext_empty.yaml", "")),
        CliCase("config", "extends: a folder", extends("cfg_ext_folder.yaml", str(sp["a_folder"]))),
        CliCase("config", "extends: /dev/zero", extends("cfg_ext_zero.yaml", "/dev/zero")),
        CliCase("config", "extends: a FIFO", extends("cfg_ext_fifo.yaml", str(sp["fifo.yaml"]))),
        CliCase(
            "config",
            "extends: a secret file (like /etc/shadow)",
            extends("cfg_ext_secret.yaml", str(sp["secret.txt"])),
            forbidden=secret_forbidden,
        ),
        CliCase("config", "extends: a missing file", extends("cfg_ext_missing.yaml", str(d / "nope.yaml"))),
        CliCase("config", "extends: itself", ["train", str(self_loop), *fast]),
        CliCase("config", "extends: 42 (not a path)", ["train", cfg("cfg_ext_number.yaml", "extends: 42\n"), *fast]),
        CliCase("config", "config is a FIFO", train_file("fifo.yaml")),
        CliCase("config", "config is /dev/zero", ["train", "/dev/zero", *fast]),
        CliCase("config", "config is a binary file", train_file("binary.bin")),
        CliCase("config", "config is not UTF-8", train_file("non_utf8.yaml")),
        CliCase("config", "config is an empty file", train_file("empty.yaml")),
        CliCase("config", "config is a YAML list", train_file("list.yaml")),
        CliCase("config", "config is a YAML string", train_file("scalar.yaml")),
        CliCase("config", "config holds a NUL byte", train_file("nul.yaml")),
        CliCase("config", "config of 64 MB", train_file("huge.yaml")),
        CliCase("config", "config is a secret file", train_file("secret.txt"), forbidden=secret_forbidden),
        CliCase("config", "seed -1", topic("seed=-1")),
        CliCase("config", "seed 2**40", topic(f"seed={2**40}")),
        CliCase("config", "seed 1.5", topic("seed=1.5")),
        CliCase("config", "seed .inf", topic("seed=.inf")),
        CliCase("config", "split.seed -1", topic("split.seed=-1")),
        CliCase("config", "split.folds 1", topic("split.folds=1")),
        CliCase("config", "split.repeats 0", topic("split.repeats=0")),
        CliCase("config", "split.dev_fraction 0.99 (7 training sentences)", topic("split.dev_fraction=0.99")),
        CliCase("config", "split.dev_fraction 0", topic("split.dev_fraction=0")),
        CliCase("config", "split.dev_fraction .nan", topic("split.dev_fraction=.nan")),
        *[
            CliCase("config", f"data.encoding {codec}", topic(f"data.encoding={codec}"))
            for codec in ("rot13", "base64", "hex", "uu", "zlib")
        ],
        CliCase("config", "tracking.uri notascheme:foo", topic("tracking.uri=notascheme:foo")),
        CliCase("config", "tracking.uri sqlite:////proc/nope/x.db", topic("tracking.uri=sqlite:////proc/nope/x.db")),
        CliCase("config", "evaluation.bootstrap_samples 1e9", topic("evaluation.bootstrap_samples=1000000000")),
        CliCase("config", "evaluation.bootstrap_samples -1", topic("evaluation.bootstrap_samples=-1")),
        CliCase("config", "evaluation.confidence 1.0", topic("evaluation.confidence=1.0")),
        CliCase("config", "data.leakage_threshold 0", topic("data.leakage_threshold=0")),
        CliCase("config", "data.max_text_chars 0", topic("data.max_text_chars=0")),
        CliCase("config", "model.params.C -1", topic("model.params.C=-1")),
        CliCase("config", "model.params.C .inf", topic("model.params.C=.inf")),
        CliCase("config", "model.params.C .nan", topic("model.params.C=.nan")),
        CliCase("config", "model.params.min_df 1e23", topic("model.params.min_df=1.0e+23")),
        CliCase("config", "model.params.max_features -5", topic("model.params.max_features=-5")),
        CliCase("config", "task.type regression", topic("task.type=regression")),
        CliCase("config", "task.labels []", topic("task.labels=[]")),
        CliCase("config", "task.name ''", topic("task.name=''")),
        CliCase("config", "data.format xml", topic("data.format=xml")),
        CliCase("config", "data.columns.text names a missing column", topic("data.columns.text=body")),
        CliCase("config", "decision.objective nosuch", topic("decision.objective=nosuch")),
    ]
    return cases


def data_cases_round2(bench: Bench, sp: dict[str, Path]) -> list[CliCase]:
    """Training files with unhashable labels, surrogates, special files and a secret (issue 20, items 6-8)."""
    rows = [dict(r) for r in bench.slice_rows]
    good_lines = [json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in rows]

    def changed(name: str, index: int, **fields: Any) -> Path:
        copy = [dict(r) for r in rows]
        copy[index].update(fields)
        return bench.write_jsonl(name, copy)

    def with_line(name: str, index: int, line: bytes) -> Path:
        return bench.write_bytes(name, b"".join(good_lines[:index]) + line + b"\n" + b"".join(good_lines[index:]))

    import pyarrow as pa
    import pyarrow.parquet as pq

    struct_path = bench.data / "struct_label.parquet"
    table = pa.table(
        {
            "id": [r["id"] for r in rows],
            "doc_id": [r["doc_id"] for r in rows],
            "text": [r["text"] for r in rows],
            "topics": [{"first": (r["topics"] or [""])[0]} for r in rows],
        }
    )
    pq.write_table(table, struct_path)
    ragged = bench.data / "ragged.csv"
    csv_lines = ["id,doc_id,text,topics"] + [
        f'{r["id"]},{r["doc_id"]},"{r["text"].replace(chr(34), "")}",{"|".join(r["topics"])}' for r in rows
    ]
    csv_lines[30] += ",extra,fields"
    ragged.write_text("\n".join(csv_lines) + "\n", "utf-8")
    header_only = bench.write_bytes("header_only.csv", b"id,doc_id,text,topics\n")
    against = [{**r, "stance": 0 if r["stance"] == "against" else r["stance"]} for r in rows]
    zero_against = bench.write_jsonl("stance_zero_against.jsonl", against)
    surrogate_escaped = with_line(
        "surrogate_escaped.jsonl", 30, b'{"id": "s-1", "doc_id": "s", "text": "bad \\ud800 here", "topics": []}'
    )
    surrogate_raw = with_line(
        "surrogate_raw.jsonl", 30, b'{"id": "s-2", "doc_id": "s", "text": "bad \xed\xa0\x80 here", "topics": []}'
    )
    secret = str(sp["secret.txt"])
    eval_secret = f"evaluation.sets=[{{name: leak, path: {secret}, format: tsv}}]"

    def topic(path: Path | str, *overrides: str, config: str = "topic_logreg") -> list[str]:
        return train_args(config, *overrides, data=Path(path))

    return [
        CliCase(
            "data",
            'topics [["energy"]] (a list in the label list)',
            topic(changed("nested_label.jsonl", 5, topics=[["energy"]])),
        ),
        CliCase(
            "data",
            'stance {"v": 1} (an object label)',
            topic(changed("object_label.jsonl", 5, stance={"v": 1}), config="stance_logreg"),
        ),
        CliCase("data", "Parquet label column of structs", topic(struct_path)),
        CliCase("data", "lone surrogate escaped in JSON (line 31)", topic(surrogate_escaped), mention=["line 31"]),
        CliCase("data", "lone surrogate as raw bytes (line 31)", topic(surrogate_raw), mention=["line 31"]),
        CliCase(
            "data", "data.train a secret file, format tsv", topic(secret, "data.format=tsv"), forbidden=[SECRET_MARKER]
        ),
        CliCase(
            "data",
            "data.train a secret file, format jsonl",
            topic(secret, "data.format=jsonl"),
            forbidden=[SECRET_MARKER],
        ),
        CliCase(
            "data", "data.train a secret file, format csv", topic(secret, "data.format=csv"), forbidden=[SECRET_MARKER]
        ),
        CliCase(
            "data",
            "evaluation set a secret file, format tsv",
            topic(bench.slice, eval_secret),
            forbidden=[SECRET_MARKER],
        ),
        CliCase("data", "data.train a folder", topic(sp["a_folder"], "data.format=jsonl")),
        CliCase("data", "data.train a FIFO", topic(sp["fifo.jsonl"])),
        CliCase("data", "data.train /dev/zero (format jsonl)", topic("/dev/zero", "data.format=jsonl")),
        CliCase("data", "text is a number (line 13)", topic(changed("text_number.jsonl", 12, text=42))),
        CliCase("data", "text is a list", topic(changed("text_list.jsonl", 12, text=["a", "b"]))),
        CliCase("data", "id is an object", topic(changed("id_object.jsonl", 12, id={"a": 1}))),
        CliCase("data", "ragged CSV (a row with extra fields)", topic(ragged, "data.label_separator=|")),
        CliCase("data", "CSV with a header only", topic(header_only, "data.label_separator=|")),
        CliCase(
            "data",
            "label_map {0: against} (the README's example; must be accepted)",
            topic(zero_against, "data.label_map={0: against}", config="stance_logreg"),
            expect="success",
        ),
    ]


class ListeningSocket:
    """A loopback port held open by this bench (so that ``serve`` finds it in use)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.port: int = self.sock.getsockname()[1]

    def __enter__(self) -> ListeningSocket:
        return self

    def __exit__(self, *_: object) -> None:
        self.sock.close()


def cli_cases(bench: Bench, runs: dict[str, str], busy_port: int) -> list[CliCase]:
    """CLI misuse against the models home (14); ``busy_port`` is held open by the bench."""
    sentences = bench.data / "sentences.txt"
    sentences.write_text("Iran and Iraq signed a gas deal.\n", "utf-8")
    empty = bench.write_bytes("empty_input.txt", b"\n\n")
    nonexistent_out = Path("/nonexistent_dir/m.json")
    seeds, topic_run = str(SEEDS_FILE), runs["topic"]

    def make_file(work: Path) -> None:
        (work / "a_file").write_text("keep me\n", "utf-8")

    return [
        CliCase(
            "cli",
            "evaluate --output /nonexistent_dir/m.json",
            ["evaluate", topic_run, "--data", seeds, "--output", str(nonexistent_out)],
            must_not_exist=[nonexistent_out],
        ),
        CliCase(
            "cli", "evaluate --data a missing file", ["evaluate", topic_run, "--data", str(bench.data / "nope.jsonl")]
        ),
        CliCase("cli", "predict an unknown run id", ["predict", "0" * 32, "--input", str(sentences)]),
        CliCase(
            "cli", "predict an http:// model URI", ["predict", "http://127.0.0.1:9/model", "--input", str(sentences)]
        ),
        CliCase("cli", "predict an input without sentences", ["predict", topic_run, "--input", str(empty)]),
        CliCase("cli", "runs --task nothing", ["runs", "--task", "nothing"]),
        CliCase("cli", "runs --metric typo", ["runs", "--task", "topic", "--metric", "seeds/f1_macr"]),
        CliCase("cli", "serve --port 99999", ["serve", "--port", "99999"]),
        CliCase("cli", "serve --port <a port in use>", ["serve", "--port", str(busy_port)]),
        CliCase("cli", "export --out <a file>", ["export", "--task", "topic", "--out", "a_file"], setup=make_file),
        CliCase("cli", "tag with empty text", ["tag", ""]),
        CliCase("cli", "tag with an empty --target", ["tag", "Iran and Iraq signed a gas deal.", "--target", " "]),
        CliCase("cli", "tag --input a missing file", ["tag", "--input", str(bench.data / "missing.txt")]),
        CliCase(
            "cli", "promote --task topic --rollback with no previous", ["promote", "--task", "topic", "--rollback"]
        ),
    ]


def run_cases(
    bench: Bench, cases: list[CliCase], home_for: Callable[[int, CliCase], Home], snapshot_store: bool
) -> list[CaseResult]:
    """Each case on its own home (so side effects are its own) and folder, ``--case-jobs`` at a time."""

    def one(indexed: tuple[int, CliCase]) -> CaseResult:
        home = home_for(*indexed)
        case = indexed[1]
        result = run_cli_case(home, case, home.path / "work", snapshot_store, bench.options.hang_seconds)
        say(f"bad_inputs/{case.group}: {case.name}: {'ok' if result.ok else 'FAIL'} ({result.got[:150]})")
        return result

    with ThreadPoolExecutor(max_workers=bench.options.case_jobs) as pool:
        return list(pool.map(one, enumerate(cases)))


def selected(bench: Bench, cases: list, name_of: Callable[[Any], str]) -> list:
    """The cases ``--cases`` (a regular expression on "group: name") selects; ``--quick``: 2 per group."""
    pattern = re.compile(bench.options.cases, re.IGNORECASE) if bench.options.cases else None
    chosen = [c for c in cases if pattern is None or pattern.search(name_of(c))]
    if bench.options.quick and pattern is None:
        per_group: Counter = Counter()
        kept = []
        for c in chosen:
            group = name_of(c).split(":")[0]
            if per_group[group] < 2:
                kept.append(c)
            per_group[group] += 1
        chosen = kept
    return chosen


def traversal_uri(home: Home, run_id: str, folder: Path) -> str:
    """``runs:/<run_id>/../../…/<folder>``: a run URI whose path climbs out of the run's artifacts to ``folder``."""
    from mlflow.tracking import MlflowClient

    with _STORE_LOCK:
        artifact_uri = MlflowClient(tracking_uri=home.uri).get_run(run_id).info.artifact_uri
    base = artifact_uri.removeprefix("file://")
    return f"runs:/{run_id}/{os.path.relpath(folder, base)}"


def cli_cases_round2(bench: Bench, home: Home, runs: dict[str, str], sp: dict[str, Path]) -> list[CliCase]:
    """Output paths that cannot be written, special input files, token files, model URIs that climb out
    of the store (issue 20, items 4, 7, 8)."""
    sentences = bench.data / "sentences.txt"
    sentences.write_text("Iran and Iraq signed a gas deal.\n", "utf-8")
    seeds, topic_run = str(SEEDS_FILE), runs["topic"]
    markers = bench.root / "markers"

    def evil(tag: str) -> tuple[Path, list[Path]]:
        """A model folder of its own per case (and its marker), so one case's marker cannot hide another's."""
        return evil_model(bench.root / "x" / tag / "evil_model", markers / tag), [markers / tag]

    (evil_a, marker_a), (evil_b, marker_b), (evil_c, marker_c) = evil("predict"), evil("models"), evil("tag")
    token_binary = bench.write_bytes("token.bin", b"\x00\xff" * 32 + bytes(range(256)))

    def make_things(work: Path) -> None:
        (work / "a_file").write_text("keep me\n", "utf-8")
        (work / "a_folder").mkdir()

    def case(name: str, args: list[str], **kwargs: Any) -> CliCase:
        return CliCase("cli", name, args, setup=make_things, **kwargs)

    evaluate = ["evaluate", topic_run, "--data", seeds]
    serve = ["serve", "--port", str(free_port()), "--admin-token-file"]
    return [
        case("evaluate --output /dev/full", [*evaluate, "--output", "/dev/full"]),
        case("evaluate --output <a folder>", [*evaluate, "--output", "a_folder"]),
        case("evaluate --report-dir /proc/x", [*evaluate, "--report-dir", "/proc/x"]),
        case("evaluate --report-dir <a file>", [*evaluate, "--report-dir", "a_file"]),
        case("evaluate --data a FIFO", ["evaluate", topic_run, "--data", str(sp["fifo.jsonl"])]),
        case("evaluate --data /dev/zero", ["evaluate", topic_run, "--data", "/dev/zero"]),
        case(
            "evaluate --data a secret file",
            ["evaluate", topic_run, "--data", str(sp["secret.txt"])],
            forbidden=[SECRET_MARKER],
        ),
        case("evaluate --labels-column nosuch", [*evaluate, "--labels-column", "nosuch"]),
        case(
            "split-seeds --output into a missing folder",
            ["split-seeds", "--seeds", str(REPO / "seeds"), "--output", "missing/s.jsonl"],
        ),
        case(
            "split-seeds --output onto a folder",
            ["split-seeds", "--seeds", str(REPO / "seeds"), "--output", "a_folder"],
        ),
        case(
            "split-seeds --output /dev/full", ["split-seeds", "--seeds", str(REPO / "seeds"), "--output", "/dev/full"]
        ),
        case("split-seeds --seeds a missing folder", ["split-seeds", "--seeds", "no_such_seeds"]),
        case("export --out under a file", ["export", "--task", "topic", "--out", "a_file/model"]),
        case("export --out /proc/x", ["export", "--task", "topic", "--out", "/proc/x"]),
        case("export --alias nope", ["export", "--task", "topic", "--alias", "nope", "--out", "out"]),
        case("serve --admin-token-file a binary file", [*serve, str(token_binary)]),
        case("serve --admin-token-file /dev/zero", [*serve, "/dev/zero"]),
        case("serve --admin-token-file a FIFO", [*serve, str(sp["fifo.token"])]),
        case("serve --admin-token-file a short token", [*serve, str(sp["short.token"])]),
        case("serve --admin-token-file a missing file", [*serve, "no_such.token"]),
        case("runs --limit -5", ["runs", "--task", "topic", "--limit", "-5"]),
        case(
            "predict runs:/<id>/../../…/evil_model (path traversal)",
            ["predict", traversal_uri(home, topic_run, evil_a), "--input", str(sentences)],
            must_not_exist=marker_a,
        ),
        case(
            "predict models:/tagger-topic/../../…/evil_model",
            ["predict", "models:/tagger-topic/" + "../" * 12 + str(evil_b).lstrip("/"), "--input", str(sentences)],
            must_not_exist=marker_b,
        ),
        case(
            "tag --topic-model runs:/<id>/../../…/evil_model",
            ["tag", "Iran and Iraq met.", "--topic-model", traversal_uri(home, topic_run, evil_c)],
            must_not_exist=marker_c,
        ),
        case("predict --input a FIFO", ["predict", topic_run, "--input", str(sp["fifo.txt"])]),
        case("predict --input /dev/zero", ["predict", topic_run, "--input", "/dev/zero"]),
        case("tag --input /dev/zero", ["tag", "--input", "/dev/zero"]),
        case("tag --input a FIFO", ["tag", "--input", str(sp["fifo.txt"])]),
        case("compare with an unknown run", ["compare", topic_run, "f" * 32]),
        case("compare --set nosuch", ["compare", topic_run, topic_run, "--set", "nosuch"]),
        case("promote --metric nosuch/metric", ["promote", "--task", "topic", "--metric", "nosuch/metric"]),
    ]


def sweep_cases(bench: Bench, sp: dict[str, Path]) -> list[CliCase]:
    """Bad spaces and sweep options (issue 20, items 1, 4, 7): each must fail before any trial runs."""
    d = bench.data / "spaces"
    d.mkdir(exist_ok=True)
    cases_root = bench.root / "cases"

    def space(name: str, params: str, extra: str = "") -> str:
        path = d / f"{name}.yaml"
        path.write_text(f"{extra}params:\n  {params}\n", "utf-8")
        return str(path)

    good = space("good", "model.params.C: {type: float, low: 0.5, high: 2.0}")

    def sweep(space_path: str | Path, *options: str) -> list[str]:
        return [
            "sweep",
            str(CONFIGS["topic_logreg"]),
            "--space",
            str(space_path),
            "--trials",
            "2",
            "--set",
            "evaluation.bootstrap_samples=0",
            "--set",
            f"data.train={bench.slice}",
            "--set",
            "split.folds=2",
            *options,
        ]

    def make_file(work: Path) -> None:
        (work / "a_file").write_text("keep me\n", "utf-8")

    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    bomb = d / "bomb.yaml"
    bomb.write_text(anchor_bomb() + "params:\n  model.params.C: {type: categorical, choices: *a8}\n", "utf-8")
    cases = [
        ("C high: .inf", sweep(space("inf_high", "model.params.C: {type: float, low: 1, high: .inf}"))),
        (
            "min_df high: 1e23",
            sweep(space("min_df_huge", "model.params.min_df: {type: int, low: 1, high: 100000000000000000000000}")),
        ),
        ("C low .nan", sweep(space("nan_low", "model.params.C: {type: float, low: .nan, high: 1.0}"))),
        ("low above high", sweep(space("low_gt_high", "model.params.C: {type: float, low: 10.0, high: 1.0}"))),
        ("log scale from 0", sweep(space("log_zero", "model.params.C: {type: float, low: 0.0, high: 1.0, log: true}"))),
        (
            "negative step",
            sweep(space("step_negative", "model.params.C: {type: float, low: 0.1, high: 1.0, step: -0.1}")),
        ),
        (
            "empty categorical",
            sweep(space("cat_empty", "model.params.word_ngram_range: {type: categorical, choices: []}")),
        ),
        (
            "choice the family refutes",
            sweep(space("bad_choice", "model.params.word_ngram_range: {type: categorical, choices: [[2, 1]]}")),
        ),
        ("unknown key", sweep(space("unknown_key", "model.params.Cx: {type: float, low: 0.1, high: 1.0}"))),
        ("key outside model/decision", sweep(space("data_key", "data.train: {type: categorical, choices: [a.jsonl]}"))),
        ("unknown range type", sweep(space("bad_type", "model.params.C: {type: gaussian, low: 0.1, high: 1.0}"))),
        (
            "space objective nosuch",
            sweep(
                space(
                    "bad_objective", "model.params.C: {type: float, low: 0.5, high: 2.0}", "objective: cv/nosuch_mean\n"
                )
            ),
        ),
        (
            "space direction sideways",
            sweep(
                space("bad_direction", "model.params.C: {type: float, low: 0.5, high: 2.0}", "direction: sideways\n")
            ),
        ),
        ("space is a YAML list", sweep(sp["list.yaml"])),
        ("space is an anchor bomb", sweep(bomb)),
        ("space file missing", sweep(d / "nope.yaml")),
        ("space is a folder", sweep(sp["a_folder"])),
        ("space is a FIFO", sweep(sp["fifo.yaml"])),
        ("space is /dev/zero", sweep("/dev/zero")),
        ("space is a secret file", sweep(sp["secret.txt"])),
        ("--storage sqlite:////proc/nope/x.db", sweep(good, "--storage", "sqlite:////proc/nope/x.db")),
        (
            f"--storage postgresql://127.0.0.1:{closed_port} (closed port)",
            sweep(good, "--storage", f"postgresql://u@127.0.0.1:{closed_port}/x"),
        ),
        ("--storage notaurl", sweep(good, "--storage", "notaurl")),
        ("--out under a file", sweep(good, "--out", "a_file/out")),
        ("--out /proc/x", sweep(good, "--out", "/proc/x")),
        ("--study ''", sweep(good, "--study", "")),
        ("--objective cv/nosuch_mean", sweep(good, "--objective", "cv/nosuch_mean")),
        ("--trials 0", [*sweep(good), "--trials", "0"]),
        ("--jobs 0", sweep(good, "--jobs", "0")),
    ]
    result = [
        CliCase("sweep", name, args, setup=make_file, forbidden=[SECRET_MARKER] if "secret" in name else [])
        for name, args in cases
    ]
    result += [
        CliCase(
            "sweep",
            "--study ../../../X (path traversal)",
            sweep(good, "--study", "../../../X_study"),
            must_not_exist=[cases_root / "X_study"],
        ),
        CliCase(
            "sweep",
            "task.name ../../../Y (path traversal)",
            sweep(good, "--set", "task.name=../../../Y_task"),
            must_not_exist=[cases_root / "Y_task-tfidf_logreg"],
        ),
    ]
    return result


def batch_cases(bench: Bench, home: Home, runs: dict[str, str], sp: dict[str, Path]) -> list[CliCase]:
    """``tagger tag-batch`` on broken inputs and outputs (issue 20, item 7): one line, and no output left."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = bench.data / "batch"
    d.mkdir(exist_ok=True)
    texts = [r["text"] for r in bench.rows]
    good = d / "good.parquet"
    pq.write_table(pa.table({"text": [texts[i % len(texts)] for i in range(5000)]}), good)
    raw = good.read_bytes()
    (d / "truncated.parquet").write_bytes(raw[: len(raw) // 2])
    (d / "corrupt.parquet").write_bytes(b"PAR1" + bytes(random.Random(3).randrange(256) for _ in range(4000)) + b"PAR1")
    (d / "empty.csv").write_bytes(b"")
    lines = [json.dumps({"text": texts[i % len(texts)]}, ensure_ascii=False) for i in range(45_000)]
    lines[39_999] = '{"text": "unterminated'
    (d / "bad_line_40000.jsonl").write_text("\n".join(lines) + "\n", "utf-8")
    ragged = ["text,target"] + [f'"{t.replace(chr(34), "")}",closer Iran–Iraq ties' for t in texts[:200]]
    ragged[50] += ",extra,fields"
    (d / "ragged.csv").write_text("\n".join(ragged) + "\n", "utf-8")
    mixed = [{"text": t} for t in texts[:100]] + [{"text": v} for v in (5, ["x"], {"a": 1}, True, 2.5)]
    (d / "mixed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in mixed), "utf-8")
    (d / "nested.jsonl").write_text('{"text": "ok."}\n{"text": ' + "[" * 100_000 + "]" * 100_000 + "}\n", "utf-8")
    (d / "no_text.jsonl").write_text("".join(json.dumps({"body": t}) + "\n" for t in texts[:50]), "utf-8")
    pq.write_table(pa.table({"text": [{"a": t} for t in texts[:50]]}), d / "struct_text.parquet")
    (d / "non_utf8.jsonl").write_bytes(b'{"text": "ok."}\n{"text": "caf\xe9 \xff"}\n')
    (d / "surrogate.jsonl").write_bytes(b'{"text": "ok."}\n{"text": "bad \xed\xa0\x80 here"}\n')
    fifo = d / "fifo.jsonl"
    if not fifo.exists():
        os.mkfifo(fifo)
    marker = bench.root / "markers" / "batch"
    evil = evil_model(bench.root / "x" / "batch" / "evil_model", marker)

    def make_file(work: Path) -> None:
        (work / "a_file").write_text("keep me\n", "utf-8")

    def batch(source: Path | str, output: str = "out", *options: str) -> list[str]:
        return ["tag-batch", str(source), output, "--workers", "1", *options]

    cases = [
        ("corrupt Parquet", batch(d / "corrupt.parquet")),
        ("truncated Parquet", batch(d / "truncated.parquet")),
        ("empty CSV", batch(d / "empty.csv")),
        ("JSONL with a bad line at row 40,000", batch(d / "bad_line_40000.jsonl")),
        ("ragged CSV", batch(d / "ragged.csv")),
        ("mixed text types (number, list, object, bool)", batch(d / "mixed.jsonl")),
        ("deeply nested JSON (100,000 levels)", batch(d / "nested.jsonl")),
        ("no text column", batch(d / "no_text.jsonl")),
        ("Parquet text column of structs", batch(d / "struct_text.parquet")),
        ("non-UTF-8 JSONL", batch(d / "non_utf8.jsonl")),
        ("lone surrogate bytes in JSONL", batch(d / "surrogate.jsonl")),
        ("input is a FIFO", batch(fifo)),
        ("output under a file", batch(good, "a_file/out")),
        ("output /proc/x", batch(good, "/proc/x")),
        (
            "--model runs:/<id>/../../…/evil_model",
            batch(good, "out", "--model", traversal_uri(home, runs["topic"], evil)),
        ),
    ]
    return [
        CliCase(
            "tag-batch",
            name,
            args,
            setup=make_file,
            must_not_exist=[marker] if "evil" in name else [],
        )
        for name, args in cases
    ]


# HTTP cases: (name, expected status, request function(server) -> (status, detail))


def post_raw(server: Server, content: bytes, content_type: str = "application/json") -> tuple[int | None, str]:
    with httpx.Client(timeout=HTTP_TIMEOUT_S, trust_env=False) as client:
        response = client.post(server.base + "/v1/tag", content=content, headers={"Content-Type": content_type})
        return response.status_code, response.text[:200]


def post_json(server: Server, body: Any) -> tuple[int | None, str]:
    return post_raw(server, json.dumps(body).encode())


def post_chunked(server: Server, size: int) -> tuple[int | None, str]:
    """A body without Content-Length (chunked), ``size`` bytes in 64 KB chunks."""

    def chunks() -> Iterator[bytes]:
        yield b'{"sentences": ["'
        sent = 0
        while sent < size:
            yield b"a" * 65536
            sent += 65536
        yield b'"]}'

    with httpx.Client(timeout=HTTP_TIMEOUT_S, trust_env=False) as client:
        try:
            response = client.post(
                server.base + "/v1/tag", content=chunks(), headers={"Content-Type": "application/json"}
            )
        except httpx.HTTPError as exc:  # the server may close the connection while we still send
            return None, f"{type(exc).__name__}: {exc}"
        return response.status_code, response.text[:200]


def reload(server: Server, headers: dict[str, str]) -> tuple[int | None, str]:
    with httpx.Client(timeout=60, trust_env=False) as client:
        response = client.post(server.base + "/v1/admin/reload", content=b"{}", headers=headers)
        return response.status_code, response.text[:200]


def stalled_body(server: Server) -> tuple[int | None, str]:
    """Declare Content-Length 5000, send 10 bytes, and wait (bounded) for the server's answer."""
    head = (
        f"POST /v1/tag HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nContent-Type: application/json\r\n"
        "Content-Length: 5000\r\n\r\n"
    ).encode()
    start = time.monotonic()
    data = b""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(head + b'{"text": "')
        sock.settimeout(0.5)
        deadline = start + STALL_LIMIT_S + STALL_MARGIN_S + 10
        while b"\r\n" not in data and time.monotonic() < deadline:
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                continue
            if not chunk:
                break
            data += chunk
    seconds = time.monotonic() - start
    match = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    if not match:
        return None, f"no status after {seconds:.1f} s ({data[:80]!r})"
    status = int(match.group(1))
    if seconds > STALL_LIMIT_S + STALL_MARGIN_S:
        return status, f"answered only after {seconds:.1f} s (limit {STALL_LIMIT_S + STALL_MARGIN_S:g} s)"
    return status, f"after {seconds:.1f} s"


def http_cases() -> list[tuple[str, int, Callable[[Server], tuple[int | None, str]]]]:
    """Bad requests to a live server (28) and the status each must get."""
    sentence = "Iran and Iraq signed a gas deal."
    many = " ".join(f"Iran and Iraq met for round {i}." for i in range(1001))
    return [
        ("empty text", 422, lambda s: post_json(s, {"text": ""})),
        ("whitespace-only text", 422, lambda s: post_json(s, {"text": " \n\t "})),
        ("zero-width-only text", 422, lambda s: post_json(s, {"text": "\u200b\u200b"})),
        ("lone surrogate in JSON", 422, lambda s: post_raw(s, b'{"text": "\\ud800"}')),
        ("lone surrogate in a sentence", 422, lambda s: post_raw(s, b'{"sentences": ["ok.", "\\udfff x"]}')),
        ("unknown field", 422, lambda s: post_json(s, {"text": sentence, "colour": "red"})),
        ("wrong type: text is a number", 422, lambda s: post_json(s, {"text": 42})),
        ("wrong type: sentences is a string", 422, lambda s: post_json(s, {"sentences": sentence})),
        ("wrong type: target is a list", 422, lambda s: post_json(s, {"text": sentence, "target": ["a"]})),
        ("both text and sentences", 422, lambda s: post_json(s, {"text": sentence, "sentences": [sentence]})),
        ("empty object", 422, lambda s: post_json(s, {})),
        ("empty sentences list", 422, lambda s: post_json(s, {"sentences": []})),
        ("not JSON", 422, lambda s: post_raw(s, b"text=hello")),
        ("JSON array body", 422, lambda s: post_json(s, [1, 2, 3])),
        ("non-UTF-8 body", 422, lambda s: post_raw(s, b'{"text": "caf\xe9 \xff"}')),
        ("too many sentences (1001)", 413, lambda s: post_json(s, {"sentences": [sentence] * 1001})),
        ("too many sentences in text (1001)", 413, lambda s: post_json(s, {"text": many})),
        ("oversize body (1.2 MB)", 413, lambda s: post_json(s, {"sentences": ["a" * 999] * 1200})),
        ("oversize chunked body (2 MB)", 413, lambda s: post_chunked(s, 2_000_000)),
        ("sentence over 1000 characters", 422, lambda s: post_json(s, {"sentences": ["word " * 300]})),
        ("over-long target (500 characters)", 422, lambda s: post_json(s, {"text": sentence, "target": "x" * 500})),
        ("empty target", 422, lambda s: post_json(s, {"text": sentence, "target": ""})),
        ("Content-Length 5000, 10 bytes sent, stalls", 408, stalled_body),
        ("reload without token", 401, lambda s: reload(s, s.admin_headers(token=""))),
        ("reload with a wrong token", 401, lambda s: reload(s, s.admin_headers(token="wrong-" + "0" * 26))),
        ("reload as text/plain", 415, lambda s: reload(s, s.admin_headers(content_type="text/plain"))),
        (
            "reload with a foreign Origin",
            403,
            lambda s: reload(s, {**s.admin_headers(), "Origin": "http://evil.example"}),
        ),
        (
            "reload with Sec-Fetch-Site: cross-site",
            403,
            lambda s: reload(s, {**s.admin_headers(), "Sec-Fetch-Site": "cross-site"}),
        ),
    ]


def request(server: Server, method: str, path: str, **kwargs: Any) -> tuple[int | None, str]:
    with httpx.Client(timeout=HTTP_TIMEOUT_S, trust_env=False) as client:
        response = client.request(method, server.base + path, **kwargs)
        return response.status_code, response.text[:200]


def raw_request(server: Server, payload: bytes, wait: float = 15.0) -> tuple[int | None, str]:
    """Send ``payload`` as is on a new connection; the status of the first answer (None: closed or none)."""
    data = b""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(payload)
        sock.settimeout(0.5)
        deadline = time.monotonic() + wait
        while b"\r\n" not in data and time.monotonic() < deadline:
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                continue
            except OSError as exc:
                return None, f"{type(exc).__name__}"
            if not chunk:
                break
            data += chunk
    match = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    status_line = data.split(b"\r\n")[0][:80].decode("latin-1")
    return (int(match.group(1)), status_line) if match else (None, f"no status ({data[:60]!r})")


def http_cases_round2() -> list[tuple[str, int | tuple[int, ...], Callable[[Server], tuple[int | None, str]]]]:
    """More bad requests (issue 20, item 10: the admin origin check, JSON bodies for reload)."""
    sentence = "Iran and Iraq signed a gas deal."
    json_type = {"Content-Type": "application/json"}

    def origin(value: str) -> Callable[[Server], tuple[int | None, str]]:
        return lambda s: reload(s, {**s.admin_headers(), "Origin": value.format(port=s.port)})

    return [
        ("text is null", 422, lambda s: post_json(s, {"text": None})),
        ("sentences holds null", 422, lambda s: post_json(s, {"sentences": [None]})),
        ("sentences holds a number", 422, lambda s: post_json(s, {"sentences": [1]})),
        ("target is a number", 422, lambda s: post_json(s, {"text": sentence, "target": 5})),
        ("text is an object", 422, lambda s: post_json(s, {"text": {"a": sentence}})),
        ("JSON nested 100,000 levels", (400, 422), lambda s: post_raw(s, b"[" * 100_000 + b"]" * 100_000)),
        (
            "1,000 sentences of 1,000 characters (1 MB body)",
            413,
            lambda s: post_json(s, {"sentences": ["a" * 1000] * 1000}),
        ),
        ("GET /v1/tag", 405, lambda s: request(s, "GET", "/v1/tag")),
        ("POST to an unknown path", 404, lambda s: request(s, "POST", "/v1/nope", json={"text": sentence})),
        ("GET /v1/admin/reload", 405, lambda s: request(s, "GET", "/v1/admin/reload", headers=s.admin_headers())),
        (
            "reload with a non-JSON body",
            (400, 422),
            lambda s: request(s, "POST", "/v1/admin/reload", content=b"not json", headers=s.admin_headers()),
        ),
        (
            "reload with an empty body",
            (400, 422),
            lambda s: request(s, "POST", "/v1/admin/reload", content=b"", headers=s.admin_headers()),
        ),
        (
            "reload without Content-Type",
            415,
            lambda s: request(
                s, "POST", "/v1/admin/reload", content=b"{}", headers={"Authorization": f"Bearer {s.home.token}"}
            ),
        ),
        ("reload with Basic auth", 401, lambda s: reload(s, {**json_type, "Authorization": f"Basic {s.home.token}"})),
        ("reload with Origin https:// (scheme differs)", 403, origin("https://127.0.0.1:{port}")),
        ("reload with Origin equal to Host (DNS rebinding)", 403, origin("http://127.0.0.1:{port}")),
        ("reload with Origin: null", 403, origin("null")),
        ("request line that is not HTTP", 400, lambda s: raw_request(s, b"GARBAGE\r\n\r\n")),
        (
            "negative Content-Length",
            400,
            lambda s: raw_request(s, b"POST /v1/tag HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n"),
        ),
        (
            "request headers of 100 KB (over 64 KiB)",
            431,
            lambda s: raw_request(s, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"),
        ),
    ]


def still_serving(server: Server) -> tuple[bool, str]:
    """A good request answers 200."""
    try:
        with httpx.Client(timeout=15, trust_env=False) as client:
            response = client.post(server.base + "/v1/tag", json=GOOD_BODY)
            return response.status_code == 200, str(response.status_code)
    except httpx.HTTPError as exc:
        return False, f"{type(exc).__name__}"


def run_http_cases(server: Server, cases: list) -> list[CaseResult]:
    """Each HTTP case, then a good request; 5xx or a dead server is a failure."""
    results = []
    for name, expected, send in cases:
        start = time.monotonic()
        try:
            status, detail = send(server)
        except (httpx.HTTPError, OSError) as exc:
            status, detail = None, f"{type(exc).__name__}: {exc}"
        seconds = round(time.monotonic() - start, 2)
        alive, good = still_serving(server)
        allowed = expected if isinstance(expected, tuple) else (expected,)
        ok = status in allowed and alive and "answered only after" not in detail
        got = f"{status} {detail[:200]}; then good request -> {good}"
        wanted = " or ".join(map(str, allowed))
        results.append(CaseResult("http", name, f"{wanted}, then 200", got, ok, seconds))
        say(f"bad_inputs/http: {name}: {'ok' if ok else 'FAIL'} ({got[:150]})")
    return results


BAD_INPUTS_GOAL = 150


def section_bad_inputs(bench: Bench) -> dict:
    """Config, data, sweep, CLI, tag-batch and HTTP bad inputs; each must fail cleanly and harmlessly."""
    results: list[CaseResult] = []
    errors = []
    sigterm_ok = None
    sp = special_inputs(bench)

    def label(case: CliCase) -> str:
        return f"{case.group}: {case.name}"

    say("bad_inputs: config, data and sweep cases, each on its own new store")
    new_store = config_cases(bench) + config_cases_round2(bench, sp) + data_cases(bench)
    new_store += data_cases_round2(bench, sp) + sweep_cases(bench, sp)
    results += run_cases(
        bench,
        selected(bench, new_store, label),
        lambda i, case: Home(bench.root / "cases" / f"{case.group}-{i:02d}"),
        snapshot_store=False,
    )
    needs_models = not bench.options.cases or any(g in bench.options.cases for g in ("cli", "tag-batch", "http"))
    try:
        if not needs_models:
            raise BenchError("no case of the groups cli, tag-batch or http selected")
        home, runs = bench.models()
        say("bad_inputs: CLI and tag-batch cases, each on a copy of the store with the trained and promoted models")
        with ListeningSocket() as busy:
            with_models = cli_cases(bench, runs, busy.port) + cli_cases_round2(bench, home, runs, sp)
            with_models += batch_cases(bench, home, runs, sp)
            results += run_cases(
                bench,
                selected(bench, with_models, label),
                lambda i, case: home.clone(bench.root / "cases" / f"{case.group}-{i:02d}"),
                snapshot_store=True,
            )
        http = selected(bench, http_cases() + http_cases_round2(), lambda c: f"http: {c[0]}")
        if http:
            with serving(home, "bad-inputs") as server:
                results += run_http_cases(server, http)
            sigterm_ok = server.sigterm_ok
    except BenchError as exc:
        if needs_models:
            errors.append(str(exc))
        say(f"bad_inputs: {exc}")
    by_group = Counter(r.group for r in results)
    failed = [f"{r.group}: {r.name}: {r.got}" for r in results if not r.ok]
    errors_expected = [r for r in results if r.expected != EXPECTED_SUCCESS]
    full = not bench.options.quick and not bench.options.cases
    return {
        "cases": [r.as_dict() for r in results],
        "count": len(results),
        "per_group": dict(by_group),
        "ok": sum(r.ok for r in results),
        "failed_count": len(failed),
        "failed": failed,
        "tracebacks": sum(r.traceback for r in results),
        "hangs": sum(r.hang for r in results),
        "hang_limit_s": bench.options.hang_seconds,
        "load_scaled_limits_s": sorted({r.limit_s for r in results if r.limit_s is not None}),
        "over_hang_limit_unscaled": sum(r.seconds > bench.options.hang_seconds for r in errors_expected),
        "with_side_effects": sum(bool(r.side_effects) for r in errors_expected),
        "leaked_file_contents": sum(r.leaked for r in results),
        "not_one_error_line_exit_2": sum(not r.ok for r in errors_expected),
        "errors": errors,
        "server_stopped_by_sigterm": sigterm_ok,
        "full_table": full,
        "passed": not errors and not failed and (len(results) >= BAD_INPUTS_GOAL or not full),
    }


# --------------------------------------------------------------------------------------------------
# section 4: soak


def soak_bodies(seeds: list[dict], count: int = 120) -> list[dict]:
    """Distinct request bodies from the seed sentences: ``text`` and ``sentences``, varied targets."""
    texts = [s["text"] for s in seeds]
    targets = [
        None,
        "closer Iran–Iraq ties",
        "closer Turkey–Iraq ties",
        "closer Iran–Saudi Arabia ties",
        "closer US–China ties",
    ]
    rng = random.Random(13)
    bodies, seen = [], set()
    for k in range(count * 4):
        if len(bodies) >= count:
            break
        start, size = rng.randrange(len(texts)), 1 + rng.randrange(8)
        chunk = texts[start : start + size] or texts[:1]
        body: dict[str, Any] = {"text": " ".join(chunk)} if k % 2 == 0 else {"sentences": chunk}
        target = targets[rng.randrange(len(targets))]
        if target:
            body["target"] = target
        key = json.dumps(body, sort_keys=True)
        if key not in seen:
            seen.add(key)
            bodies.append(body)
    return bodies


def expected_answers(server: Server, bodies: list[dict]) -> list[list[dict]]:
    """The sentences the server returns for each body, one request at a time."""
    answers = []
    with httpx.Client(timeout=HTTP_TIMEOUT_S, trust_env=False) as client:
        for body in bodies:
            response = client.post(server.base + "/v1/tag", json=body)
            if response.status_code != 200:
                raise BenchError(f"single-threaded reference request got {response.status_code}: {response.text[:200]}")
            answers.append(response.json()["sentences"])
    return answers


def compare(got: list[dict], want: list[dict]) -> tuple[str | None, float]:
    """The first difference between two sentence lists (None if equal) and the largest score difference."""
    if len(got) != len(want):
        return f"{len(got)} sentences, expected {len(want)}", 0.0
    largest = 0.0
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        for key in ("text", "start", "end", "topics", "stance"):
            if g.get(key) != w.get(key):
                return f"sentence {i}: {key} {g.get(key)!r} != {w.get(key)!r}", largest
        for key in ("topic_scores", "stance_scores"):
            gs, ws = g.get(key) or {}, w.get(key) or {}
            if gs.keys() != ws.keys():
                return f"sentence {i}: {key} labels {sorted(gs)} != {sorted(ws)}", largest
            for label in ws:
                largest = max(largest, abs(gs[label] - ws[label]))
                if abs(gs[label] - ws[label]) > SCORE_TOLERANCE:
                    return f"sentence {i}: {key}[{label}] {gs[label]} != {ws[label]}", largest
    return None, largest


@dataclass
class SoakTally:
    """Outcome counters of the soak."""

    latencies: list[float] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)
    errors: int = 0
    wrong: int = 0
    largest_score_diff: float = 0.0
    error_examples: list[str] = field(default_factory=list)
    wrong_examples: list[str] = field(default_factory=list)
    reloads: Counter = field(default_factory=Counter)
    reload_errors: list[str] = field(default_factory=list)
    rss: list[tuple[float, float]] = field(default_factory=list)

    def error(self, message: str) -> None:
        self.errors += 1
        if len(self.error_examples) < 5:
            self.error_examples.append(message[:300])


async def soak_request(
    client: httpx.AsyncClient, body: dict, want: list[dict], tally: SoakTally, scheduled: float
) -> None:
    """One tag request; latency, errors and wrong answers go to ``tally``."""
    start = time.monotonic()
    tally.lags.append(start - scheduled)
    try:
        response = await client.post("/v1/tag", json=body)
    except httpx.HTTPError as exc:
        tally.error(f"{type(exc).__name__}: {exc}")
        return
    if response.status_code != 200:
        tally.error(f"{response.status_code}: {response.text[:200]}")
        return
    tally.latencies.append(time.monotonic() - start)
    difference, largest = compare(response.json().get("sentences", []), want)
    tally.largest_score_diff = max(tally.largest_score_diff, largest)
    if difference:
        tally.wrong += 1
        if len(tally.wrong_examples) < 5:
            tally.wrong_examples.append(f"{json.dumps(body, ensure_ascii=False)[:120]}: {difference}"[:400])


async def reloader(client: httpx.AsyncClient, server: Server, end: float, tally: SoakTally) -> None:
    """POST /v1/admin/reload every ~5 s until ``end``; every third time two at once."""

    async def one() -> None:
        try:
            response = await client.post("/v1/admin/reload", content=b"{}", headers=server.admin_headers(), timeout=60)
            tally.reloads[response.status_code] += 1
            if response.status_code != 200 and len(tally.reload_errors) < 5:
                tally.reload_errors.append(f"{response.status_code}: {response.text[:200]}")
        except httpx.HTTPError as exc:
            tally.reloads["exception"] += 1
            if len(tally.reload_errors) < 5:
                tally.reload_errors.append(f"{type(exc).__name__}: {exc}")

    tick = 0
    while time.monotonic() + RELOAD_EVERY_S < end:
        await asyncio.sleep(RELOAD_EVERY_S)
        tick += 1
        await asyncio.gather(*(one() for _ in range(2 if tick % 3 == 0 else 1)))


async def rss_sampler(pid: int, start: float, stop: asyncio.Event, tally: SoakTally) -> None:
    """The server's RSS (MB) now and every 10 s until ``stop``."""
    process = psutil.Process(pid)
    while True:
        try:
            tally.rss.append((round(time.monotonic() - start, 1), round(process.memory_info().rss / 2**20, 1)))
        except psutil.Error:
            return
        try:
            await asyncio.wait_for(stop.wait(), timeout=RSS_EVERY_S)
        except TimeoutError:
            continue
        with contextlib.suppress(psutil.Error):
            tally.rss.append((round(time.monotonic() - start, 1), round(process.memory_info().rss / 2**20, 1)))
        return


async def soak_load(server: Server, bodies: list[dict], answers: list[list[dict]], seconds: float) -> SoakTally:
    """Open-loop load at SOAK_RATE for ``seconds`` (at most seconds * SOAK_RATE requests) plus reloads."""
    tally = SoakTally()
    total = int(seconds * SOAK_RATE)
    order = random.Random(7)
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
    async with httpx.AsyncClient(
        base_url=server.base, timeout=HTTP_TIMEOUT_S, trust_env=False, limits=limits
    ) as client:
        start = time.monotonic()
        stop = asyncio.Event()
        sampler = asyncio.create_task(rss_sampler(server.proc.pid, start, stop, tally))
        reloads = asyncio.create_task(reloader(client, server, start + seconds, tally))
        tasks = []
        for i in range(total):
            scheduled = start + i / SOAK_RATE
            await asyncio.sleep(max(0.0, scheduled - time.monotonic()))
            k = order.randrange(len(bodies))
            tasks.append(asyncio.create_task(soak_request(client, bodies[k], answers[k], tally, scheduled)))
            if i % int(SOAK_RATE * 30) == 0 and i:
                say(f"soak: {i}/{total} requests sent, {tally.errors} errors, {tally.wrong} wrong")
        await asyncio.gather(*tasks, reloads)
        stop.set()
        await sampler
    return tally


def rss_summary(samples: list[tuple[float, float]], seconds: float) -> dict:
    """First, last and max RSS, and growth from the first sample after the warm-up to the end."""
    if not samples:
        return {"rss_samples_mb": [], "rss_growth_pct": None}
    warmup = min(RSS_BASELINE_S, seconds / 3)
    baseline = next(((t, mb) for t, mb in samples if t >= warmup), samples[0])
    growth = (samples[-1][1] - baseline[1]) / baseline[1] * 100 if baseline[1] else None
    return {
        "rss_samples_mb": [list(s) for s in samples],
        "rss_first_mb": samples[0][1],
        "rss_baseline_at_s": baseline[0],
        "rss_baseline_mb": baseline[1],
        "rss_last_mb": samples[-1][1],
        "rss_max_mb": max(mb for _, mb in samples),
        "rss_growth_pct": round(growth, 2) if growth is not None else None,
    }


def section_soak(bench: Bench, seconds: float) -> dict:
    """A live server under open-loop load with concurrent reloads; answers checked against single-threaded ones."""
    home, _ = bench.models()
    with serving(home, "soak") as server:
        bodies = soak_bodies(bench.seeds)
        say(f"soak: {len(bodies)} distinct bodies, reference answers one request at a time ...")
        answers = expected_answers(server, bodies)
        say(f"soak: {seconds:g} s at {SOAK_RATE:g} requests/s with reloads every {RELOAD_EVERY_S:g} s ...")
        start = time.monotonic()
        tally = asyncio.run(soak_load(server, bodies, answers, seconds))
        wall = time.monotonic() - start
        alive, _ = still_serving(server)
    ms = [x * 1000 for x in tally.latencies]
    requests = len(tally.latencies) + tally.errors
    result = {
        "seconds": round(wall, 1),
        "rate_rps": SOAK_RATE,
        "requests": requests,
        "distinct_bodies": len(bodies),
        "errors": tally.errors,
        "wrong_answers": tally.wrong,
        "largest_score_difference": tally.largest_score_diff,
        "p50_ms": round(percentile(ms, 50), 2) if ms else None,
        "p99_ms": round(percentile(ms, 99), 2) if ms else None,
        "max_ms": round(max(ms), 2) if ms else None,
        "p99_send_lag_ms": round(percentile(tally.lags, 99) * 1000, 2) if tally.lags else None,
        "reloads": {str(k): v for k, v in tally.reloads.items()},
        "reload_errors": tally.reload_errors,
        "error_examples": tally.error_examples,
        "wrong_examples": tally.wrong_examples,
        "serving_after": alive,
        "server_stopped_by_sigterm": server.sigterm_ok,
        **rss_summary(tally.rss, seconds),
    }
    reload_failures = sum(v for k, v in tally.reloads.items() if k != 200)
    growth = result["rss_growth_pct"]
    result["passed"] = bool(
        tally.errors == 0
        and tally.wrong == 0
        and reload_failures == 0
        and sum(tally.reloads.values()) > 0
        and alive
        and growth is not None
        and growth < RSS_GROWTH_LIMIT_PCT
    )
    say(
        f"soak: {requests} requests, {tally.errors} errors, {tally.wrong} wrong, p50 {result['p50_ms']} ms, "
        f"p99 {result['p99_ms']} ms, reloads {result['reloads']}, RSS growth {growth}% -> "
        f"{'ok' if result['passed'] else 'FAIL'}"
    )
    return result


# --------------------------------------------------------------------------------------------------
# section: load (45 big texts while /healthz and one-sentence /v1/tag are timed) and connections
# (slow-header and idle connections); issue 20, item 3


LOAD_BIG_TEXTS = 45
LOAD_SECONDS = 90.0  # the big-text load is timed until every big request is answered, or this long
LOAD_TEXT_BYTES = 950_000  # under the 1 MB body limit, in sentences of at most 980 characters (< 1,000 sentences)
HEALTHZ_EVERY_S = 0.1
SMALL_TAG_EVERY_S = 0.25
HEALTHZ_P99_GOAL_MS = 200.0
SMALL_TAG_P99_GOAL_MS = 500.0
SLOW_CONNECTIONS = 300
IDLE_CONNECTIONS = 300
DEFAULT_HEADER_TIMEOUT_S = 10.0  # used when `tagger serve --help` documents no header-time limit
DEFAULT_IDLE_TIMEOUT_S = 5.0  # used when it documents no idle keep-alive limit
CLOSE_MARGIN_S = 3.0  # a connection counts as closed within a limit when closed by limit + max(3 s, 20%)
NORMAL_EVERY_S = 0.5


def big_texts(bench: Bench, count: int, size: int = LOAD_TEXT_BYTES) -> list[bytes]:
    """``count`` different request bodies of about ``size`` bytes: corpus words (no sentence marks) in
    sentences of at most 980 characters, so each text is legal (under the body and sentence limits)."""
    words = " ".join(r["text"] for r in bench.rows).translate(str.maketrans("", "", '.!?;:"')).split()
    bodies = []
    for k in range(count):
        rng = random.Random(k)
        sentences, length, current = [], 0, []
        i = rng.randrange(len(words))
        while length < size - 1200:
            current.append(words[i % len(words)])
            i += 1
            if sum(len(w) + 1 for w in current) > 960:
                sentence = " ".join(current) + "."
                sentences.append(sentence)
                length += len(sentence.encode()) + 1
                current = []
        bodies.append(json.dumps({"text": " ".join(sentences)}, ensure_ascii=False).encode())
    return bodies


@dataclass
class Probe:
    started: float
    ms: float
    ok: bool
    status: str


def prober(base: str, kind: str, every: float, stop: threading.Event, out: list[Probe]) -> None:
    """``GET /healthz`` or a one-sentence ``POST /v1/tag`` every ``every`` s until ``stop``; failures are
    timed too (up to the client timeout)."""
    with httpx.Client(base_url=base, timeout=HTTP_TIMEOUT_S, trust_env=False) as client:
        while not stop.is_set():
            start = time.monotonic()
            try:
                if kind == "healthz":
                    response = client.get("/healthz")
                else:
                    response = client.post("/v1/tag", json=GOOD_BODY)
                ok, status = response.status_code == 200, str(response.status_code)
            except httpx.HTTPError as exc:
                ok, status = False, type(exc).__name__
            elapsed = time.monotonic() - start
            out.append(Probe(start, elapsed * 1000, ok, status))
            stop.wait(max(0.0, every - elapsed))


def probe_summary(probes: list[Probe], start: float, end: float) -> dict:
    """p50/p99/max of the probes started in [start, end]; a failed probe counts as HTTP_TIMEOUT_S."""
    inside = [p for p in probes if start <= p.started <= end]
    ms = [p.ms if p.ok else HTTP_TIMEOUT_S * 1000 for p in inside]
    return {
        "probes": len(inside),
        "failed": sum(not p.ok for p in inside),
        "statuses": dict(Counter(p.status for p in inside)),
        "p50_ms": round(percentile(ms, 50), 1) if ms else None,
        "p99_ms": round(percentile(ms, 99), 1) if ms else None,
        "max_ms": round(max(ms), 1) if ms else None,
    }


def section_load(bench: Bench) -> dict:
    """45 concurrent ~950 KB texts to /v1/tag while /healthz and one-sentence /v1/tag are timed."""
    count = bench.options.big_texts if not bench.options.quick else min(10, bench.options.big_texts)
    cap = bench.options.load_seconds if not bench.options.quick else min(30.0, bench.options.load_seconds)
    home, _ = bench.models()
    bodies = big_texts(bench, count)
    with serving(home, "load") as server:
        probes: dict[str, list[Probe]] = {"healthz": [], "tag": []}
        stop = threading.Event()
        threads = [
            threading.Thread(target=prober, args=(server.base, "healthz", HEALTHZ_EVERY_S, stop, probes["healthz"])),
            threading.Thread(target=prober, args=(server.base, "tag", SMALL_TAG_EVERY_S, stop, probes["tag"])),
        ]
        for thread in threads:
            thread.start()
        time.sleep(3.0)  # idle reference
        idle_end = time.monotonic()
        say(f"load: {count} texts of ~{len(bodies[0]) // 1000} KB at once; /healthz and one sentence timed")
        big: list[tuple[str, float]] = []

        def send(body: bytes) -> None:
            begun = time.monotonic()
            try:
                with httpx.Client(timeout=cap + 30, trust_env=False) as client:
                    response = client.post(
                        server.base + "/v1/tag", content=body, headers={"Content-Type": "application/json"}
                    )
                    big.append((str(response.status_code), time.monotonic() - begun))
            except httpx.HTTPError as exc:
                big.append((type(exc).__name__, time.monotonic() - begun))

        load_start = time.monotonic()
        senders = [threading.Thread(target=send, args=(body,), daemon=True) for body in bodies]
        for thread in senders:
            thread.start()
        for thread in senders:
            thread.join(timeout=max(0.1, load_start + cap - time.monotonic()))
        load_end = time.monotonic()
        stop.set()
        for thread in threads:
            thread.join(timeout=HTTP_TIMEOUT_S + 5)
        alive, _ = still_serving(server)
    healthz = probe_summary(probes["healthz"], load_start, load_end)
    small = probe_summary(probes["tag"], load_start, load_end)
    result = {
        "big_texts": count,
        "big_text_bytes": len(bodies[0]),
        "load_seconds": round(load_end - load_start, 1),
        "big_answered": len(big),
        "big_statuses": dict(Counter(status for status, _ in big)),
        "big_max_s": round(max((s for _, s in big), default=0.0), 1),
        "healthz": healthz,
        "one_sentence_tag": small,
        "idle_healthz": probe_summary(probes["healthz"], 0.0, idle_end),
        "idle_one_sentence_tag": probe_summary(probes["tag"], 0.0, idle_end),
        "serving_after": alive,
        "goal_healthz_p99_ms": HEALTHZ_P99_GOAL_MS,
        "goal_one_sentence_p99_ms": SMALL_TAG_P99_GOAL_MS,
    }
    result["passed"] = bool(
        healthz["p99_ms"] is not None
        and healthz["p99_ms"] < HEALTHZ_P99_GOAL_MS
        and small["p99_ms"] is not None
        and small["p99_ms"] < SMALL_TAG_P99_GOAL_MS
        and alive
        and len(big) == count
    )
    say(
        f"load: /healthz p99 {healthz['p99_ms']} ms ({healthz['failed']} failed), one sentence p99 "
        f"{small['p99_ms']} ms ({small['failed']} failed); big texts {result['big_statuses']} in "
        f"{result['load_seconds']} s -> {'ok' if result['passed'] else 'FAIL'}"
    )
    return result


def documented_limits() -> dict[str, float | None]:
    """Header-time, idle keep-alive and connection limits from ``tagger serve --help`` (click's
    ``[default: …]``), None where an option is not documented."""
    try:
        out = subprocess.run(
            [*tagger_command(), "serve", "--help"], capture_output=True, text=True, timeout=120, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    flat = " ".join(out.split())
    limits: dict[str, float | None] = {"header_timeout_s": None, "idle_timeout_s": None, "max_connections": None}
    for chunk in re.split(r"\s(?=--[a-z])", flat):
        name = chunk.split()[0] if chunk.startswith("--") else ""
        default = re.search(r"\[default:\s*([0-9.]+)", chunk)
        if not name or not default:
            continue
        if "header" in name:
            limits["header_timeout_s"] = float(default.group(1))
        elif "idle" in name or "keep-alive" in name or "keepalive" in name:
            limits["idle_timeout_s"] = float(default.group(1))
        elif "connection" in name:
            limits["max_connections"] = float(default.group(1))
    return limits


async def hold_connection(port: int, kind: str, window: float, out: list[dict]) -> None:
    """One hostile connection: ``slow`` sends a partial request line and then one header byte a second;
    ``idle`` sends nothing; ``kept`` sends one request, reads the answer and then stays idle. Records when
    the server closed it (EOF or reset), or None when it was still open after ``window`` s."""
    start = time.monotonic()
    record: dict[str, Any] = {"kind": kind, "closed_after_s": None, "error": None, "answer": None}
    out.append(record)
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout=10)
    except (OSError, TimeoutError) as exc:
        record["error"] = f"connect: {type(exc).__name__}"
        record["closed_after_s"] = round(time.monotonic() - start, 2)
        return
    start = time.monotonic()
    trickle_task = None
    try:
        if kind == "slow":
            writer.write(b"GET /healthz HTT")
            await writer.drain()

            async def trickle() -> None:
                rest = itertools.chain(b"P/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ", itertools.repeat(ord("a")))
                for byte in rest:
                    await asyncio.sleep(1.0)
                    writer.write(bytes([byte]))
                    await writer.drain()

            trickle_task = asyncio.create_task(trickle())
        elif kind == "kept":
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=30)
            length = re.search(rb"content-length: *(\d+)", head, re.IGNORECASE)
            if length:
                await reader.readexactly(int(length.group(1)))
            record["answer"] = head[:12].decode("latin-1")
            start = time.monotonic()  # idle from here
        deadline = start + window
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            read = asyncio.create_task(reader.read(4096))
            waiting = {read} | ({trickle_task} if trickle_task else set())
            done, _ = await asyncio.wait(waiting, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            if read in done:
                data = read.result()
                if not data:
                    record["closed_after_s"] = round(time.monotonic() - start, 2)
                    return
                record["answer"] = record["answer"] or data[:12].decode("latin-1")
                continue
            read.cancel()
            if trickle_task in done:  # writing failed: the server closed it
                exc = trickle_task.exception()
                record["error"] = type(exc).__name__ if exc else None
                record["closed_after_s"] = round(time.monotonic() - start, 2)
                return
            if not done:
                return
    except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
        record["error"] = type(exc).__name__
        record["closed_after_s"] = round(time.monotonic() - start, 2)
    finally:
        if trickle_task:
            trickle_task.cancel()
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), timeout=2)


async def normal_requests(base: str, end: float, out: list[Probe]) -> None:
    """A ``/healthz`` and a one-sentence ``/v1/tag``, each on a new connection, every NORMAL_EVERY_S."""
    while time.monotonic() < end:
        for kind in ("healthz", "tag"):
            start = time.monotonic()
            try:
                async with httpx.AsyncClient(base_url=base, timeout=HTTP_TIMEOUT_S, trust_env=False) as client:
                    response = await (
                        client.get("/healthz") if kind == "healthz" else client.post("/v1/tag", json=GOOD_BODY)
                    )
                ok, status = response.status_code == 200, f"{kind} {response.status_code}"
            except httpx.HTTPError as exc:
                ok, status = False, f"{kind} {type(exc).__name__}"
            out.append(Probe(start, (time.monotonic() - start) * 1000, ok, status))
        await asyncio.sleep(NORMAL_EVERY_S)


async def connection_load(
    port: int, base: str, counts: dict[str, int], window: float
) -> tuple[list[dict], list[Probe]]:
    records: list[dict] = []
    probes: list[Probe] = []
    holders = [hold_connection(port, kind, window, records) for kind, n in counts.items() for _ in range(n)]
    await asyncio.gather(*holders, normal_requests(base, time.monotonic() + window, probes))
    return records, probes


def section_connections(bench: Bench) -> dict:
    """300 slow-header and 300 idle connections (half fresh, half after one request): how many the server
    closes, how fast, against its documented limits; normal requests meanwhile must succeed."""
    opts = bench.options
    quick = opts.quick
    documented = documented_limits()
    header_limit = opts.header_timeout or documented.get("header_timeout_s") or DEFAULT_HEADER_TIMEOUT_S
    idle_limit = opts.idle_timeout or documented.get("idle_timeout_s") or DEFAULT_IDLE_TIMEOUT_S
    slow_n = min(30, opts.slow_connections) if quick else opts.slow_connections
    idle_n = min(30, opts.idle_connections) if quick else opts.idle_connections
    counts = {"slow": slow_n, "idle": idle_n - idle_n // 2, "kept": idle_n // 2}

    def allowed(limit: float) -> float:
        return limit + max(CLOSE_MARGIN_S, 0.2 * limit)

    # README: headers must be complete within the header limit of the connection opening (a fresh idle
    # connection too, closed without an answer); a kept-alive connection idle after a response gets the idle limit
    limits = {"slow": header_limit, "idle": header_limit, "kept": idle_limit}
    window = max(allowed(v) for v in limits.values()) + 5.0
    home, _ = bench.models()
    with serving(home, "connections") as server:
        say(
            f"connections: {slow_n} slow-header + {idle_n} idle connections for {window:g} s (header limit "
            f"{header_limit:g} s, idle limit {idle_limit:g} s)"
        )
        records, probes = asyncio.run(connection_load(server.port, server.base, counts, window))
        alive, _ = still_serving(server)
    kinds = {}
    for kind, limit in limits.items():
        mine = [r for r in records if r["kind"] == kind]
        closed = [r["closed_after_s"] for r in mine if r["closed_after_s"] is not None]
        kinds[kind] = {
            "connections": len(mine),
            "limit_s": limit,
            "allowed_s": round(allowed(limit), 1),
            "closed": len(closed),
            "closed_within_limit": sum(c <= allowed(limit) for c in closed),
            "still_open_after_window": len(mine) - len(closed),
            "closed_p50_s": percentile(closed, 50),
            "closed_max_s": max(closed) if closed else None,
            "answers": dict(Counter(r["answer"] for r in mine if r["answer"])),
            "errors": dict(Counter(r["error"] for r in mine if r["error"])),
        }
    normal_ms = [p.ms for p in probes if p.ok]
    normal = {
        "requests": len(probes),
        "failed": sum(not p.ok for p in probes),
        "failures": dict(Counter(p.status for p in probes if not p.ok)),
        "p99_ms": round(percentile(normal_ms, 99), 1) if normal_ms else None,
    }
    result = {
        "documented_limits": documented,
        "header_limit_s": header_limit,
        "idle_limit_s": idle_limit,
        "window_s": round(window, 1),
        "kinds": kinds,
        "normal_requests": normal,
        "serving_after": alive,
    }
    result["passed"] = bool(
        all(k["closed_within_limit"] == k["connections"] for k in kinds.values())
        and normal["failed"] == 0
        and normal["requests"] > 0
        and alive
    )
    say(
        "connections: "
        + ", ".join(f"{k} {v['closed_within_limit']}/{v['connections']} closed in time" for k, v in kinds.items())
        + f"; normal requests {normal['requests'] - normal['failed']}/{normal['requests']} ok -> "
        + ("ok" if result["passed"] else "FAIL")
    )
    return result


# --------------------------------------------------------------------------------------------------
# goals (issue 20's table)


def goal(goal_text: str, measured: Any, met: bool) -> dict:
    return {"goal": goal_text, "measured": measured, "met": bool(met)}


def goals(sections: dict[str, dict]) -> dict[str, dict]:
    """Each goal of issue 20's table that the sections run measured, its value and whether it is met."""
    found: dict[str, dict] = {}
    bad = sections.get("bad_inputs")
    if bad and "count" in bad:
        found["bad_inputs_count"] = goal(f">= {BAD_INPUTS_GOAL} cases", bad["count"], bad["count"] >= BAD_INPUTS_GOAL)
        found["bad_inputs_answered_as_expected"] = goal(
            "every case: one line 'error: …' and exit 2 (HTTP: the documented 4xx); accepted inputs exit 0",
            f"{bad['ok']} of {bad['count']}",
            bad["failed_count"] == 0 and not bad["errors"],
        )
        found["bad_inputs_tracebacks"] = goal("0", bad["tracebacks"], bad["tracebacks"] == 0)
        found["bad_inputs_runs_or_files_created"] = goal("0", bad["with_side_effects"], bad["with_side_effects"] == 0)
        found["bad_inputs_hangs"] = goal(
            f"0 over {bad['hang_limit_s']:g} s (times the machine's load per core, 1 to {MAX_LOAD_SCALE:g})",
            bad["hangs"],
            bad["hangs"] == 0,
        )
        found["bad_inputs_file_contents_shown"] = goal(
            "0", bad["leaked_file_contents"], bad["leaked_file_contents"] == 0
        )
    kill = sections.get("kill")
    if kill and "totals" in kill:
        t = kill["totals"]
        found["kill_orphan_processes"] = goal(
            "0 after 10 s", t["orphan_processes_after_10s"], t["orphan_processes_after_10s"] == 0
        )
        found["kill_running_runs"] = goal(
            "0 after the next command", t["running_runs_after_next_command"], t["running_runs_after_next_command"] == 0
        )
        found["kill_unreadable_parts"] = goal("0", t["unreadable_output_parts"], t["unreadable_output_parts"] == 0)
        found["kill_duplicate_registry_versions"] = goal(
            "0", t["duplicate_registry_versions"], t["duplicate_registry_versions"] == 0
        )
        found["kill_temporary_folders_left"] = goal(
            "0 after the next command", t["temporary_entries_left"], t["temporary_entries_left"] == 0
        )
        found["kill_checks_passed"] = goal(
            "every kill's checks pass",
            f"{sum(c['passed'] for c in kill['commands'].values())} of {len(kill['commands'])} commands",
            kill["passed"],
        )
    load = sections.get("load")
    if load and "healthz" in load:
        h, s = load["healthz"]["p99_ms"], load["one_sentence_tag"]["p99_ms"]
        found["load_healthz_p99_ms"] = goal(
            f"< {HEALTHZ_P99_GOAL_MS:g} ms", h, h is not None and h < HEALTHZ_P99_GOAL_MS
        )
        found["load_one_sentence_tag_p99_ms"] = goal(
            f"< {SMALL_TAG_P99_GOAL_MS:g} ms", s, s is not None and s < SMALL_TAG_P99_GOAL_MS
        )
    conn = sections.get("connections")
    if conn and "kinds" in conn:
        slow = conn["kinds"]["slow"]
        idle = [conn["kinds"]["idle"], conn["kinds"]["kept"]]
        found["slow_header_connections_closed"] = goal(
            f"all closed within the header limit ({conn['header_limit_s']:g} s + margin)",
            f"{slow['closed_within_limit']} of {slow['connections']}",
            slow["closed_within_limit"] == slow["connections"],
        )
        found["idle_connections_closed"] = goal(
            f"all closed within the header limit (fresh) / idle limit (after a request) ({conn['header_limit_s']:g} s"
            f" / {conn['idle_limit_s']:g} s + margin)",
            f"{sum(k['closed_within_limit'] for k in idle)} of {sum(k['connections'] for k in idle)}",
            all(k["closed_within_limit"] == k["connections"] for k in idle),
        )
        n = conn["normal_requests"]
        found["normal_requests_unaffected"] = goal("0 failed", n["failed"], n["failed"] == 0 and n["requests"] > 0)
    return found


# --------------------------------------------------------------------------------------------------
# main


def run_section(name: str, bench: Bench, args: argparse.Namespace) -> dict:
    """Run one section; a BenchError or an unexpected exception fails the section, not the bench."""
    say(f"== {name}")
    start = time.monotonic()
    try:
        if name == "trainings":
            result = section_trainings(bench)
        elif name == "kill":
            result = section_kill(bench)
        elif name == "bad_inputs":
            result = section_bad_inputs(bench)
        elif name == "load":
            result = section_load(bench)
        elif name == "connections":
            result = section_connections(bench)
        else:
            result = section_soak(bench, args.soak_seconds)
    except BenchError as exc:
        result = {"passed": False, "error": str(exc)}
    except Exception as exc:  # noqa: BLE001 - report and carry on with the other sections
        result = {"passed": False, "error": f"bench error: {type(exc).__name__}: {exc}"}
    result["section_seconds"] = round(time.monotonic() - start, 1)
    say(f"== {name}: {'passed' if result['passed'] else 'FAILED'} ({result['section_seconds']} s)")
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=REPO / "bench/reliability.json", help="JSON report path.")
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help=f"Comma-separated subset of: {', '.join(SECTIONS)}."
    )
    parser.add_argument("--soak-seconds", type=float, default=300.0, help="Soak duration (default 300).")
    parser.add_argument("--keep", action="store_true", help="Keep the throw-away folder (logs, stores) for debugging.")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="A small subset for development (< 3 min): default section bad_inputs, 2 cases per group, one kill "
        "per command, a short load and connection test.",
    )
    parser.add_argument(
        "--cases",
        default=None,
        help='Only bad inputs whose "group: name" matches this regex (the groups cli, tag-batch and http need the '
        "trained models: name the group in the regex).",
    )
    parser.add_argument(
        "--kills", default=None, help="Only these commands in the kill section (of train,cv,sweep,promote,tag_batch)."
    )
    parser.add_argument(
        "--hang-seconds", type=float, default=HANG_LIMIT_S, help="A bad input not answered by then is a hang (10)."
    )
    parser.add_argument("--case-jobs", type=int, default=2, help="Bad-input cases run at once (2).")
    parser.add_argument("--big-texts", type=int, default=LOAD_BIG_TEXTS, help="Concurrent ~950 KB texts (45).")
    parser.add_argument(
        "--load-seconds", type=float, default=LOAD_SECONDS, help="Longest the big-text load is timed (90)."
    )
    parser.add_argument("--slow-connections", type=int, default=SLOW_CONNECTIONS, help="Slow-header connections (300).")
    parser.add_argument("--idle-connections", type=int, default=IDLE_CONNECTIONS, help="Idle connections (300).")
    parser.add_argument(
        "--header-timeout",
        type=float,
        default=None,
        help="The server's documented header-time limit in s (default: read from 'tagger serve --help', else "
        f"{DEFAULT_HEADER_TIMEOUT_S:g}).",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=None,
        help="The server's documented idle keep-alive limit in s (default: from 'tagger serve --help', else "
        f"{DEFAULT_IDLE_TIMEOUT_S:g}).",
    )
    raw_sections = "--sections" in " ".join(argv if argv is not None else sys.argv[1:])
    args = parser.parse_args(argv)
    if args.quick and not raw_sections:
        args.sections = "bad_inputs"
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown or not args.sections:
        parser.error(f"unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}")
    if not 5 <= args.soak_seconds <= 1800:
        parser.error("--soak-seconds must be between 5 and 1800")
    if not 1 <= args.case_jobs <= 8 or not 1 <= args.hang_seconds <= 600:
        parser.error("--case-jobs must be 1 to 8 and --hang-seconds 1 to 600")
    if args.cases:
        try:
            re.compile(args.cases)
        except re.error as exc:
            parser.error(f"--cases: {exc}")
    return args


def write_report(path: Path, report: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", "utf-8")


def on_signal(signum: int, _frame: object) -> None:
    """Ctrl-C or SIGTERM: kill every process started here at once (threads waiting on them return), then
    unwind through ``main``'s cleanup, which writes the report."""
    PROCS.kill_all()
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    sys.exit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
    root = Path(tempfile.mkdtemp(prefix="tagger-reliability-"))
    report: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "cpus": os.cpu_count(),
        "soak_seconds": args.soak_seconds,
        "quick": args.quick,
        "sections": {},
    }
    say(f"throw-away folder {root}")
    start = time.monotonic()
    try:
        bench = Bench(root)
        bench.options = args
        for name in args.sections:
            needs_models = {"kill", "load", "connections", "soak"} | ({"bad_inputs"} if not args.cases else set())
            if name != "trainings" and needs_models & set(args.sections):
                bench.start_models()  # in the background; the trainings section keeps both cores busy itself
            report["sections"][name] = run_section(name, bench, args)
    except KeyboardInterrupt:
        report["interrupted"] = True
        say("interrupted")
    except SystemExit:  # SIGTERM: clean up, write the report, exit with its status
        report["interrupted"] = True
        raise
    finally:
        PROCS.kill_all()
        report["seconds"] = round(time.monotonic() - start, 1)
        report["goals"] = goals(report["sections"])
        report["goals_met"] = bool(report["goals"]) and all(g["met"] for g in report["goals"].values())
        report["passed"] = (
            bool(report["sections"])
            and not report.get("interrupted")
            and all(s["passed"] for s in report["sections"].values())
        )
        write_report(args.output, report)
        if args.keep:
            say(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    summary = ", ".join(f"{k}: {'passed' if v['passed'] else 'FAILED'}" for k, v in report["sections"].items())
    say(f"report written to {args.output} ({summary}; {report['seconds']} s)")
    if report.get("interrupted"):
        return 130
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
