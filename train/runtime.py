"""How a ``tagger`` process runs: offline hub access, quiet libraries (the CLI and sweep workers)."""

from __future__ import annotations

import logging
import os
import warnings


def quiet_libraries() -> None:
    """Offline hub access, and no progress bars or chatty library logs on the terminal."""
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
