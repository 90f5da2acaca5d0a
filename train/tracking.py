"""MLflow set-up: where runs go, and the provenance every run records.

Embedded default: a SQLite store (``mlflow.db``) and an artifact folder (``mlartifacts/``) in the
project folder, both git-ignored. ``tracking.uri`` in the config, else ``MLFLOW_TRACKING_URI``,
points at a tracking server (e.g. one backed by PostgreSQL) without a code change.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import urllib.error
import urllib.request
from importlib import metadata
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import mlflow

from train.config import PROJECT_ROOT
from train.errors import TaggerError

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
            import sqlalchemy

            engine = sqlalchemy.create_engine(uri, connect_args={"connect_timeout": int(timeout)})
            try:
                with engine.connect():
                    pass
            finally:
                engine.dispose()
    except Exception as exc:  # noqa: BLE001 - every failure to connect gets the same clear message
        raise TaggerError(
            f"tracking store {redact(uri)} cannot be reached ({type(exc).__name__}: {exc}); "
            "check MLFLOW_TRACKING_URI or tracking.uri"
        ) from None
    _REACHED.add(uri)


def setup(configured_uri: str | None = None, experiment: str | None = None) -> str:
    """Point MLflow at the store (and registry) and make sure ``experiment`` exists."""
    uri = tracking_uri(configured_uri)
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if experiment:
        ensure_experiment(experiment)
        mlflow.set_experiment(experiment)
    return uri


def ensure_experiment(name: str) -> str:
    """Id of experiment ``name``, created if missing (embedded store: artifacts under ``mlartifacts/``)."""
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    embedded = mlflow.get_tracking_uri().startswith("sqlite:")
    location = (home() / "mlartifacts").resolve().as_uri() if embedded else None
    return client.create_experiment(name, artifact_location=location)


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
