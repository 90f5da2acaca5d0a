#!/usr/bin/env python
"""Reliability benchmark of tagger: concurrent trainings, ``kill -9``, bad inputs, and a soak with reloads.

Run from the project root::

    .venv/bin/python bench/reliability.py --output bench/reliability.json \\
        [--sections trainings,kill,bad_inputs,soak] [--soak-seconds 300] [--keep]

Sections:

- ``trainings``: 8 ``tagger train`` processes started at once on a new SQLite store, then again on the
  same (now used) store; every one must exit 0 and leave a FINISHED run (0 lost).
- ``kill``: ``kill -9`` of a training during data loading, fitting and model logging; the store must
  still open, the killed run must be marked KILLED by the next command, and a new training must finish.
- ``bad_inputs``: config, data, CLI and HTTP cases; a CLI case must exit 2 with one ``error:`` line, no
  traceback and no side effects; an HTTP case must get its 4xx status and leave the server answering.
- ``soak``: open-loop load at 40 requests/s with concurrent reloads; every answer is compared with the
  answer the same server gave single-threaded before the soak; errors, latency and server RSS are reported.

Safety: every subprocess gets a throw-away ``TAGGER_HOME`` and ``MLFLOW_TRACKING_URI=sqlite:///<tmp>/...``
(the project's own ``mlflow.db`` is never touched), HTTP traffic goes to 127.0.0.1 only, every loop is
bounded in count and time, and every process started here is killed on exit (also on errors, Ctrl-C
and SIGTERM). Progress goes to stderr; the JSON report has one entry per section and a top-level
``passed``. The exit status is 1 when a section fails.
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
SECTIONS = ("trainings", "kill", "bad_inputs", "soak")

LOG_LINE = re.compile(r"^\d{2}:\d{2}:\d{2} (DEBUG|INFO|WARNING|ERROR|CRITICAL)\b")
RUN_LINE = re.compile(r"MLflow run .* \(([0-9a-f]{32})\)")
SLICE_EVERY = 3  # training slice: every 3rd line of the corpus keeps each training short
CONCURRENT_TRAININGS = 8
TRAIN_TIMEOUT_S = 600.0  # bound on one trial of 8 concurrent trainings (2 cores: about 100 s)
CLI_TIMEOUT_S = 180.0
SERVE_CASE_TIMEOUT_S = 45.0  # a `serve` case that does not fail at start-up is stopped after this
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


def run_cli(home: Home, args: list[str], cwd: Path | None = None, timeout: float = CLI_TIMEOUT_S) -> CliResult:
    """Run ``tagger ARGS`` against ``home``, bounded by ``timeout`` (the process group is killed then)."""
    start = time.monotonic()
    proc = PROCS.start(
        [*tagger_command(), *args],
        cwd=cwd or home.path,
        env=home.env(),
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
    """``{relative path: (size, sha256)}`` of the files under ``folder``."""
    snapshot = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            snapshot[str(path.relative_to(folder))] = (
                path.stat().st_size,
                hashlib.sha256(path.read_bytes()).hexdigest(),
            )
    return snapshot


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

    def home(self, name: str) -> Home:
        """A new, empty home (its store does not exist yet)."""
        return Home(self.root / f"{next(self._home_numbers):02d}-{name}")

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
    """Start a topic SVM training, SIGKILL it in ``phase``; return what was seen at the kill."""
    proc = PROCS.start(
        [*tagger_command(), *train_args("topic_svm", data=bench.slice)],
        cwd=home.path,
        env=home.env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    watcher = StderrWatcher(proc)
    reached = watcher.wait_for(phase.marker, timeout=CLI_TIMEOUT_S)
    if reached:
        time.sleep(phase.delay)
    alive = proc.poll() is None
    at_kill = watcher.last_progress()
    PROCS.kill(proc)
    proc.wait(timeout=30)
    watcher.join()
    return {
        "marker_seen": reached,
        "killed_while_running": alive,
        "in_phase": reached and alive and phase.marker in at_kill,
        "last_progress_line": at_kill[9:].strip(),
        "run_id": watcher.run_id,
    }


def runs_all(home: Home) -> tuple[CliResult, list[dict] | None]:
    """``tagger runs --task topic --all --json`` and its parsed rows (None when not JSON Lines)."""
    result = run_cli(home, ["runs", "--task", "topic", "--all", "--json"])
    try:
        rows = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    except json.JSONDecodeError:
        rows = None
    return result, rows


def check_after_kill(bench: Bench, home: Home, killed: dict) -> dict:
    """Store opens, killed run marked KILLED (or no run left RUNNING), and a new training finishes."""
    listing, rows = runs_all(home)
    flag_missing = listing.rc == 2 and "no such option" in listing.stderr.lower()
    statuses = {row.get("run_id"): row.get("status") for row in rows or []}
    run_id = killed["run_id"]
    if run_id:
        marked = statuses.get(run_id) == "KILLED"
        seen_status = statuses.get(run_id, "not listed")
    else:
        marked = listing.rc == 0 and rows is not None and "RUNNING" not in statuses.values()
        seen_status = "no run was created"
    follow_up = run_cli(home, train_args("topic_svm", data=bench.slice))
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
    """``kill -9`` of a training at data loading, fitting and logging, each followed by checks."""
    home = bench.home("kill")
    phases = {}
    for phase in KILL_PHASES:
        say(f"kill/{phase.name}: training, kill -9 after '{phase.marker}' + {phase.delay} s")
        killed = kill_at(bench, home, phase)
        check = check_after_kill(bench, home, killed)
        result = {**killed, **check}
        result["passed"] = bool(
            killed["in_phase"] and check["store_opens"] and check["killed_run_marked"] and check["follow_up_finished"]
        )
        phases[phase.name] = result
        say(
            f"kill/{phase.name}: at '{killed['last_progress_line']}', run {killed['run_id']} -> "
            f"{check['killed_run_status']}; runs --all exit {check['runs_all_exit']}; "
            f"follow-up {check['follow_up_status']} -> {'ok' if result['passed'] else 'FAIL'}"
        )
    return {"phases": phases, "passed": all(p["passed"] for p in phases.values())}


# --------------------------------------------------------------------------------------------------
# section 3: bad inputs


@dataclass
class CliCase:
    """A CLI call that must fail cleanly: exit 2, one ``error:`` line, no traceback, no side effects."""

    group: str
    name: str
    args: list[str]
    timeout: float = CLI_TIMEOUT_S
    must_not_exist: list[Path] = field(default_factory=list)
    setup: Callable[[Path], None] | None = None  # prepares the case's working folder


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

    def as_dict(self) -> dict:
        return self.__dict__.copy()


EXPECTED_CLI = "exit 2, one 'error:' line, no traceback, no side effects"


def judge_cli(case: CliCase, result: CliResult, side_effects: list[str]) -> CaseResult:
    """Compare one CLI outcome with the contract for user errors."""
    others = non_log_lines(result.stderr)
    traceback = "Traceback" in result.stderr
    one_line = len(others) == 1 and others[0].startswith("error:") and len(others[0]) > len("error:")
    ok = result.rc == 2 and one_line and not traceback and not side_effects
    status = "timed out (killed)" if result.rc is None else f"exit {result.rc}"
    got = f"{status}; {len(others)} non-log stderr line(s)"
    if traceback:
        got += " incl. Traceback"
    if others:
        got += f"; first: {others[0][:240]}"
        if len(others) > 1:
            got += f" | last: {others[-1][:160]}"
    if side_effects:
        got += f"; side effects: {', '.join(side_effects)}"
    return CaseResult(
        case.group, case.name, EXPECTED_CLI, got, ok, result.seconds, len(log_lines(result.stderr)), side_effects
    )


def run_cli_case(home: Home, case: CliCase, work: Path, snapshot_store: bool = True) -> CaseResult:
    """Run ``case`` in its own working folder and check the result and the side effects."""
    work.mkdir(parents=True)
    if case.setup:
        case.setup(work)
    files_before = dir_snapshot(work)
    runs_before, _ = store_runs(home, None)
    aliases_before = store_aliases(home) if snapshot_store else {}
    existed = [p for p in case.must_not_exist if p.exists()]
    result = run_cli(home, case.args, cwd=work, timeout=case.timeout)
    effects = []
    runs_after, _ = store_runs(home, None)
    new_runs = {k: v for k, v in runs_after.items() if k not in runs_before}
    if new_runs:
        effects.append(f"{len(new_runs)} new run(s) {dict(Counter(new_runs.values()))}")
    if snapshot_store and store_aliases(home) != aliases_before:
        effects.append("registered model aliases changed")
    if dir_snapshot(work) != files_before:
        effects.append("files written or changed in the working folder")
    effects += [f"{p} created" for p in case.must_not_exist if p.exists() and p not in existed]
    return judge_cli(case, result, effects)


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
        CliCase("cli", "serve --port 99999", ["serve", "--port", "99999"], SERVE_CASE_TIMEOUT_S),
        CliCase("cli", "serve --port <a port in use>", ["serve", "--port", str(busy_port)], SERVE_CASE_TIMEOUT_S),
        CliCase("cli", "export --out <a file>", ["export", "--task", "topic", "--out", "a_file"], setup=make_file),
        CliCase("cli", "tag with empty text", ["tag", ""]),
        CliCase("cli", "tag with an empty --target", ["tag", "Iran and Iraq signed a gas deal.", "--target", " "]),
        CliCase("cli", "tag --input a missing file", ["tag", "--input", str(bench.data / "missing.txt")]),
        CliCase(
            "cli", "promote --task topic --rollback with no previous", ["promote", "--task", "topic", "--rollback"]
        ),
    ]


def run_cases(cases: list[CliCase], home_for: Callable[[int, CliCase], Home], snapshot_store: bool) -> list[CaseResult]:
    """Each case on its own home (so side effects are its own) and folder, two at a time (2 cores)."""

    def one(indexed: tuple[int, CliCase]) -> CaseResult:
        home = home_for(*indexed)
        case = indexed[1]
        result = run_cli_case(home, case, home.path / "work", snapshot_store)
        say(f"bad_inputs/{case.group}: {case.name}: {'ok' if result.ok else 'FAIL'} ({result.got[:150]})")
        return result

    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(one, enumerate(cases)))


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


def still_serving(server: Server) -> tuple[bool, str]:
    """A good request answers 200."""
    try:
        with httpx.Client(timeout=15, trust_env=False) as client:
            response = client.post(server.base + "/v1/tag", json=GOOD_BODY)
            return response.status_code == 200, str(response.status_code)
    except httpx.HTTPError as exc:
        return False, f"{type(exc).__name__}"


def run_http_cases(server: Server) -> list[CaseResult]:
    """Each HTTP case, then a good request; 5xx or a dead server is a failure."""
    results = []
    for name, expected, send in http_cases():
        start = time.monotonic()
        try:
            status, detail = send(server)
        except httpx.HTTPError as exc:
            status, detail = None, f"{type(exc).__name__}: {exc}"
        seconds = round(time.monotonic() - start, 2)
        alive, good = still_serving(server)
        ok = status == expected and alive and "answered only after" not in detail
        got = f"{status} {detail[:200]}; then good request -> {good}"
        results.append(CaseResult("http", name, f"{expected}, then 200", got, ok, seconds))
        say(f"bad_inputs/http: {name}: {'ok' if ok else 'FAIL'} ({got[:150]})")
    return results


def section_bad_inputs(bench: Bench) -> dict:
    """Config, data, CLI and HTTP bad inputs; each must fail cleanly and harmlessly."""
    results: list[CaseResult] = []
    errors = []
    sigterm_ok = None
    say("bad_inputs: config and data cases, each on its own new store")
    results += run_cases(
        config_cases(bench) + data_cases(bench),
        lambda i, case: Home(bench.root / "cases" / f"{case.group}-{i:02d}"),
        snapshot_store=False,
    )
    try:
        home, runs = bench.models()
        say("bad_inputs: CLI cases, each on a copy of the store with the trained and promoted models")
        with ListeningSocket() as busy:
            results += run_cases(
                cli_cases(bench, runs, busy.port),
                lambda i, case: home.clone(bench.root / "cases" / f"{case.group}-{i:02d}"),
                snapshot_store=True,
            )
        with serving(home, "bad-inputs") as server:
            results += run_http_cases(server)
        sigterm_ok = server.sigterm_ok
    except BenchError as exc:
        errors.append(str(exc))
        say(f"bad_inputs: {exc}")
    by_group = Counter(r.group for r in results)
    failed = [f"{r.group}: {r.name}: {r.got}" for r in results if not r.ok]
    return {
        "cases": [r.as_dict() for r in results],
        "count": len(results),
        "per_group": dict(by_group),
        "ok": sum(r.ok for r in results),
        "failed": failed,
        "errors": errors,
        "server_stopped_by_sigterm": sigterm_ok,
        "passed": not errors and not failed and len(results) >= 45,
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
    args = parser.parse_args(argv)
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown or not args.sections:
        parser.error(f"unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}")
    if not 5 <= args.soak_seconds <= 1800:
        parser.error("--soak-seconds must be between 5 and 1800")
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
        "sections": {},
    }
    say(f"throw-away folder {root}")
    start = time.monotonic()
    try:
        bench = Bench(root)
        for name in args.sections:
            if name != "trainings" and {"bad_inputs", "soak"} & set(args.sections):
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
