"""How a ``tagger`` process runs: offline hub access, quiet libraries (the CLI and sweep workers)."""

from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import os
import sys
import warnings


def quiet_libraries(verbose: bool = False) -> None:
    """Offline hub access, and no progress bars or chatty library logs on the terminal.

    MLflow also prints to stderr past its loggers ("Registered model 'tagger-topic' already exists.
    Creating a new version of this model...", "Created version '1' ..."): its event stream is switched
    off as soon as MLflow is imported, unless ``verbose`` (``tagger -v``). MLflow's errors still reach
    the user, as the exceptions tagger reports.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # stdout carries results only
    # a tracking server that stopped answering fails a command in about 30 s, not after minutes of retries
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "4")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore", category=UserWarning, module="mlflow")
    warnings.filterwarnings("ignore", category=FutureWarning)
    for name in ("mlflow", "alembic", "datasets", "urllib3", "git"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if not verbose:
        after_import("mlflow.utils.logging_utils", silence_mlflow_events)


def silence_mlflow_events(module) -> None:
    """Switch MLflow's event stream (``eprint`` and its log handler) off for good: MLflow switches it
    back on after each of its own temporary silences (``enable_logging``), so that switch is off too."""
    module.disable_logging()
    module.enable_logging = module.disable_logging


def after_import(name: str, action) -> None:
    """Run ``action(module)`` once module ``name`` is imported: now if it already is, else right after its
    import (so that quieting MLflow does not import it, which would slow every command's start)."""
    if name in sys.modules:
        action(sys.modules[name])
        return
    if any(isinstance(f, _AfterImport) and f.name == name for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _AfterImport(name, action))


class _AfterImport(importlib.abc.MetaPathFinder):
    """An import hook for one module: finds it as usual, then runs an action on it once executed."""

    def __init__(self, name: str, action):
        self.name, self.action = name, action

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)  # once; and the lookup below must not find this hook again
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        execute, action = spec.loader.exec_module, self.action

        def exec_module(module) -> None:
            execute(module)
            action(module)

        spec.loader.exec_module = exec_module
        return spec
