"""MLflow set-up: where runs go, and the provenance every run records.

Embedded default: a SQLite store (``mlflow.db``) and an artifact folder (``mlartifacts/``) in the
project folder, both git-ignored. ``tracking.uri`` in the config, else ``MLFLOW_TRACKING_URI``,
points at a tracking server (e.g. one backed by PostgreSQL) without a code change.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import shutil
import socket
import subprocess
import threading
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import mlflow

from train.config import PROJECT_ROOT, tracking_uri_problem
from train.errors import TaggerError
from train.processes import process_alive

log = logging.getLogger("tagger")

TRACKED_LIBRARIES = (
    "scikit-learn",
    "numpy",
    "pandas",
    "mlflow",
    "datasets",
    "pydantic",
    "pysbd",
    "torch",
    "transformers",
)


def home() -> Path:
    """Folder holding the embedded store: $TAGGER_HOME, else the project checkout, else the cwd."""
    if os.environ.get("TAGGER_HOME"):
        return Path(os.environ["TAGGER_HOME"]).resolve()
    if (PROJECT_ROOT / "pyproject.toml").exists():
        return PROJECT_ROOT
    return Path.cwd()


def default_tracking_uri() -> str:
    return f"sqlite:///{home() / 'mlflow.db'}"


def tracking_uri(configured: str | None = None) -> str:
    """Config value, else MLFLOW_TRACKING_URI, else the embedded SQLite store."""
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def is_embedded(uri: str) -> bool:
    return uri.startswith("sqlite:") or uri.startswith("file:") or "://" not in uri


_REACHED: set[str] = set()


def redact(uri: str) -> str:
    """``uri`` with any password replaced by ``***``, for messages."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail within ``timeout`` seconds, naming the store, when a remote tracking store does not answer.

    MLflow itself retries for minutes (HTTP back-off, database reconnects) before it gives up.
    Any HTTP answer counts as reachable; a database must accept a connection.
    """
    if uri in _REACHED or is_embedded(uri):
        return
    scheme = urlsplit(uri).scheme.split("+")[0].lower()
    try:
        if scheme in ("http", "https"):
            try:
                urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).close()
            except urllib.error.HTTPError:
                pass  # the server answered
        elif scheme in ("postgresql", "mysql"):
            try_connect(uri, timeout)
    except Exception as exc:  # noqa: BLE001 - every failure to connect gets the same clear message
        raise TaggerError(
            f"tracking store {redact(uri)} cannot be reached ({type(exc).__name__}: {exc}); "
            "check MLFLOW_TRACKING_URI or tracking.uri"
        ) from None
    _REACHED.add(uri)


def try_connect(url: str, timeout: float = 5.0) -> None:
    """Open and close one connection to the database at ``url``; raises what SQLAlchemy or the driver raises."""
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    backend = sqlalchemy.engine.make_url(url).get_backend_name()
    args = {"connect_timeout": int(timeout)} if backend in ("postgresql", "mysql") else {}
    engine = sqlalchemy.create_engine(url, poolclass=NullPool, connect_args=args)
    try:
        with engine.connect():
            pass
    finally:
        engine.dispose()


def setup(configured_uri: str | None = None, experiment: str | None = None) -> str:
    """Point MLflow at the store (and registry), create its schema once, and make sure ``experiment`` exists."""
    uri = tracking_uri(configured_uri)
    problem = tracking_uri_problem(uri)
    if problem:
        raise TaggerError(f"tracking store {redact(uri)}: {problem}; check MLFLOW_TRACKING_URI or tracking.uri")
    database = sqlite_path(uri)
    if database is not None and not database.exists():
        from train.inputs import check_writable_folder

        check_writable_folder(str(database.parent), f"tracking store {redact(uri)}: folder")
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    initialize_store(uri)
    if experiment:
        ensure_experiment(experiment)
        mlflow.set_experiment(experiment)
    return uri


def lost_store_message(exc: BaseException) -> str | None:
    """One line for a tracking store that stopped answering mid-command (None for any other error)."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    lost = ("Max retries exceeded", "Connection refused", "ConnectionError", "RemoteDisconnected", "server closed")
    if not any(any(text in f"{type(e).__name__}: {e}" for text in lost) for e in seen):
        return None
    uri = redact(tracking_uri(mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None))
    return (
        f"tracking store {uri} stopped answering ({type(exc).__name__}); check that it runs, then "
        "'tagger runs --all' shows any run this command left unfinished (the next command marks it KILLED)"
    )


_INITIALIZED: set[str] = set()
_INIT_LOCK = threading.Lock()


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None for other stores and in-memory SQLite)."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///").split("?", 1)[0])


def lock_is_shared(url: str) -> bool:
    """Whether ``storage_lock`` excludes every other process using ``url`` (SQLite file, PostgreSQL)."""
    return sqlite_path(url) is not None or url.split(":", 1)[0].split("+", 1)[0] in ("postgresql", "postgres")


@contextmanager
def storage_lock(url: str, name: str, timeout: float = 300) -> Iterator[None]:
    """A lock that every process using the storage ``url`` shares, on any machine that reaches it.

    SQLite: a file lock beside the database (``<db>.<name>.lock``). PostgreSQL: a session-level
    advisory lock in the database itself, released by the server when the holder dies. Other stores
    (a tracking server over HTTP): no lock. Waiting over ``timeout`` seconds is a ``TaggerError``.
    """
    path = sqlite_path(url)
    if path is not None:
        from filelock import FileLock, Timeout

        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(f"{path}.{name}.lock", timeout=timeout)
        try:
            lock.acquire()
        except Timeout:
            raise TaggerError(f"{lock.lock_file} is held by another process for over {timeout:.0f} s") from None
        try:
            yield
        finally:
            lock.release()
    elif lock_is_shared(url):
        import sqlalchemy
        from sqlalchemy.pool import NullPool

        key = zlib.crc32(f"tagger.{name}".encode()) & 0x7FFFFFFF
        engine = sqlalchemy.create_engine(url, poolclass=NullPool)
        try:
            with engine.connect() as connection:
                connection.execute(sqlalchemy.text("select pg_advisory_lock(:key)"), {"key": key})
                try:
                    yield
                finally:
                    connection.execute(sqlalchemy.text("select pg_advisory_unlock(:key)"), {"key": key})
        finally:
            engine.dispose()
    else:
        yield


def initialize_store(uri: str) -> None:
    """Create or upgrade the store's schema once, safely when several processes start on a new store.

    MLflow creates (and migrates) a SQLite schema on first use in each process; two processes doing
    that at once corrupt the store ("table _alembic_tmp_... already exists"). A file lock beside the
    database serialises that first use; afterwards every process finds the schema current. Tracking
    servers and databases initialise their schema once themselves (``mlflow server``, ``mlflow db upgrade``).
    """
    with _INIT_LOCK:
        if uri in _INITIALIZED:
            return
        path = sqlite_path(uri)
        if path is None:
            _INITIALIZED.add(uri)
            return
        from filelock import FileLock

        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{path}.lock", timeout=300):
            client = mlflow.MlflowClient(uri, registry_uri=uri)
            client.search_experiments(max_results=1)  # tracking schema
            client.search_registered_models(max_results=1)  # registry schema (same database)
        _INITIALIZED.add(uri)


# Earlier MLflow 3 UIs open an experiment in their GenAI view unless it says it is model training; 3.17
# reads the view from the URL instead (workflowType=machine_learning: the links of train/tracking/ui.py).
EXPERIMENT_KIND_TAG, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"


def ensure_experiment(name: str) -> str:
    """Id of experiment ``name``, created if missing (embedded store: artifacts under ``mlartifacts/``).

    Two processes may both find it missing; the one that loses the race uses the winner's.
    """
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if EXPERIMENT_KIND_TAG not in experiment.tags:  # made before tagger set the kind
            client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
        return experiment.experiment_id
    embedded = mlflow.get_tracking_uri().startswith("sqlite:")
    location = (home() / "mlartifacts").resolve().as_uri() if embedded else None
    try:
        return client.create_experiment(name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING})
    except mlflow.exceptions.MlflowException:
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def retry_on_conflict(action, attempts: int = 5):
    """Run ``action()``; retry when a concurrent writer won a uniqueness race (e.g. the same dataset
    logged by two runs at once: "UNIQUE constraint failed: datasets")."""
    import time

    for attempt in range(attempts):
        try:
            return action()
        except mlflow.exceptions.MlflowException as exc:
            text = str(exc).lower()
            conflict = "unique constraint" in text or "already exists" in text or "duplicate key" in text
            if not conflict or attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


# --- runs left RUNNING by a process that died (kill -9, OOM, power loss) ----------------------------
PID_TAG, HOST_TAG, STARTED_TAG, WORKDIR_TAG = "tagger.pid", "tagger.host", "tagger.process_started", "tagger.workdir"


def process_tags(workdir: str | Path | None = None) -> dict[str, str]:
    """Tags that let a later command tell whether the process running a run is still alive."""
    import psutil

    tags = {
        PID_TAG: str(os.getpid()),
        HOST_TAG: socket.gethostname(),
        STARTED_TAG: f"{psutil.Process().create_time():.2f}",
    }
    if workdir is not None:
        tags[WORKDIR_TAG] = str(workdir)
    return tags


def mark_stale_runs() -> list[str]:
    """Mark KILLED the RUNNING runs of this host whose process is gone; remove their work folders.

    A run killed with ``kill -9`` never ends itself, so the next command on the store ends it. Runs
    from other hosts are left alone (their processes cannot be checked from here).
    """
    client = mlflow.MlflowClient()
    host = socket.gethostname()
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return []
    running = client.search_runs(
        experiments, filter_string=f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{host}'", max_results=1000
    )
    killed = []
    for run in running:
        tags = run.data.tags
        if PID_TAG not in tags or process_alive(tags[PID_TAG], tags.get(STARTED_TAG)):
            continue
        client.set_tag(run.info.run_id, "tagger.ended_by", f"process {tags[PID_TAG]} died without ending the run")
        client.set_terminated(run.info.run_id, "KILLED")
        _fail_pending_models(client, run.info.experiment_id, run.info.run_id)
        workdir = tags.get(WORKDIR_TAG)
        if workdir and Path(workdir).name.startswith("tagger-run-"):
            shutil.rmtree(workdir, ignore_errors=True)
        killed.append(run.info.run_id)
        log.warning(
            "run %s was left RUNNING by process %s, which is gone: marked KILLED", run.info.run_id, tags[PID_TAG]
        )
    return killed


def _fail_pending_models(client: mlflow.MlflowClient, experiment_id: str, run_id: str) -> None:
    """Logged models of a dead run that never finished uploading are marked FAILED."""
    from mlflow.entities import LoggedModelStatus

    try:
        models = client.search_logged_models([experiment_id], filter_string=f"source_run_id = '{run_id}'")
    except mlflow.exceptions.MlflowException:
        return
    for model in models:
        if model.status == LoggedModelStatus.PENDING:
            client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)


def git_commit() -> tuple[str, bool]:
    """Current commit of the project checkout and whether it has uncommitted changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=PROJECT_ROOT,
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
        )
        return commit, dirty
    except (OSError, subprocess.SubprocessError):
        return "unknown", False


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in TRACKED_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


_REFUSED_IN_NAMES = re.compile(r"[^\w./\- :]")  # MLflow's param and metric names allow only these characters


def safe_name(name: str) -> str:
    """``name`` with the characters MLflow refuses in param and metric names (``&``, ``(``, ...) made ``_``."""
    return _REFUSED_IN_NAMES.sub("_", str(name))


def flatten(data: dict, prefix: str = "") -> dict[str, str]:
    """Nested config → ``a.b.c`` keys, as MLflow params.

    A mapping whose keys MLflow would refuse in a name (e.g. a ``label_map`` from "Business & Finance")
    is logged whole, as JSON, under its own key.
    """
    flat = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and all(str(k) and safe_name(k) == str(k) for k in value):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, dict) and value:
            flat[name] = json.dumps(value, ensure_ascii=False)[:6000]
        else:
            flat[name] = str(value)[:6000]
    return flat


RUN_ID = re.compile(r"^[0-9a-f]{32}$")
RUN_ID_PREFIX = re.compile(r"^[0-9a-f]{8,32}$")
SHORT_ID = 8  # the shortest run id prefix shown and accepted, as git's short hashes


def resolve_run_id(reference: str) -> str:
    """The whole run id that ``reference`` (a run id, or a unique prefix of at least 8 characters) names.

    Every command that takes a run id resolves it here, so the short ids ``tagger runs`` prints work
    everywhere. A prefix that matches no run, or several, is an error naming the candidates.
    """
    if RUN_ID.match(reference):
        return reference
    if not RUN_ID_PREFIX.match(reference):
        raise TaggerError(f"run '{reference}': not a run id (32 hex characters, or a unique prefix of at least 8)")
    if not mlflow.is_tracking_uri_set():
        setup()
    client = mlflow.MlflowClient()
    from mlflow.entities import ViewType

    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    match = f"attributes.run_id LIKE '{reference}%'"
    found = client.search_runs(experiments, match, run_view_type=ViewType.ALL, max_results=5) if experiments else []
    if not found:
        raise TaggerError(f"run '{reference}': no run id starts with it in {redact(mlflow.get_tracking_uri())}")
    if len(found) > 1:
        names = ", ".join(run.info.run_id for run in found)
        raise TaggerError(f"run '{reference}': several run ids start with it ({names}); give more characters")
    return found[0].info.run_id


def short_ids(run_ids: list[str], known: list[str] | None = None) -> list[str]:
    """Each run id cut to its shortest unique prefix (at least ``SHORT_ID`` characters) among ``known``
    (default: ``run_ids`` themselves), as git shortens commit hashes."""
    others = sorted(set(known if known is not None else run_ids) | set(run_ids))
    shortened = []
    for run_id in run_ids:
        length = SHORT_ID
        while length < len(run_id) and any(o != run_id and o.startswith(run_id[:length]) for o in others):
            length += 1
        shortened.append(run_id[:length])
    return shortened
