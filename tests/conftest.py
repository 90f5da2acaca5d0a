"""Shared fixtures: an isolated MLflow store per test session, and small labelled files."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
TRAIN_FILE = ROOT / "data" / "train" / "news_sentences.jsonl"
SEEDS_FILE = ROOT / "data" / "eval" / "seeds.jsonl"


@pytest.fixture(autouse=True, scope="session")
def isolated_store(tmp_path_factory):
    """Every test tracks to a throw-away SQLite store, never the project's own mlflow.db.

    Session-scoped, so it is in place before module-scoped fixtures that train models.
    """
    home = tmp_path_factory.mktemp("tagger-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TAGGER_HOME", str(home))
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield home


@pytest.fixture(autouse=True)
def restore_tracking_uri(isolated_store):
    """A test that points MLflow at its own store does not leak it to the next.

    ``mlflow.set_tracking_uri`` also sets ``MLFLOW_TRACKING_URI`` in the environment, so the session's
    store is restored from the fixture that made it, not read back from the environment.
    """
    yield
    import mlflow

    uri = f"sqlite:///{isolated_store / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture
def small_train(tmp_path) -> Path:
    """A 400-sentence slice of the shipped corpus (whole articles), enough for a quick real fit."""
    rows = read_jsonl(TRAIN_FILE)
    docs = sorted({r["doc_id"] for r in rows})[::4]
    keep = [r for r in rows if r["doc_id"] in set(docs)][:400]
    return write_jsonl(tmp_path / "train.jsonl", keep)


def invoke(*args, input=None):
    """Run a ``tagger`` command in-process; it must succeed."""
    from train.cli import cli

    result = CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="session")
def registry(tmp_path_factory):
    """Two TF-IDF runs per task on a small corpus slice, then both tasks promoted.

    Word n-grams only: char n-grams make each model about 40 MB, slow to save and to load in every test."""
    rows = read_jsonl(ROOT / "data/train/news_sentences.jsonl")[::3]
    data = write_jsonl(tmp_path_factory.mktemp("serve") / "train.jsonl", rows)
    from train.config import load_config
    from train.training.pipeline import train

    runs = {}
    for task in ("topic", "stance"):
        for family in ("tfidf_logreg", "tfidf_svm"):
            overrides = [f"data.train={data}", "evaluation.bootstrap_samples=0", "model.params.char_ngram_range=null"]
            config = load_config(ROOT / f"configs/{task}/{family}.yaml", overrides)
            runs[(task, family)] = train(config, config_path=f"configs/{task}/{family}.yaml")
    first = invoke("promote", "--task", "topic").stdout
    invoke("promote", "--task", "stance")
    return runs, first


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(base: str, seconds: float = 120) -> bool:
    """Whether ``tagger serve`` at ``base`` answers ``/readyz`` with 200 within ``seconds``."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            time.sleep(0.5)
    return False


ADMIN_TOKEN = "test-admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture(scope="session")
def server(registry, tmp_path_factory):
    """``tagger serve`` on a free loopback port with the registry's champions and an admin token."""
    port = free_port()
    log_file = open(tmp_path_factory.mktemp("server") / "server.log", "w+b")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "train.cli",
            "serve",
            "--port",
            str(port),
            "--max-sentences",
            "50",
            "--max-body-bytes",
            "100000",
            "--request-timeout",
            "4",
        ],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env={**os.environ, "TAGGER_ADMIN_TOKEN": ADMIN_TOKEN},
    )
    base = f"http://127.0.0.1:{port}"
    if not wait_ready(base):
        proc.kill()
        log_file.seek(0)
        pytest.fail(log_file.read().decode())
    yield base
    proc.terminate()
    proc.wait(timeout=30)
    log_file.close()


def run_main(monkeypatch, capsys, *args: str, store: str) -> tuple[int, list[str]]:
    """Run the ``tagger`` entry point in-process on ``store``; its exit status and its stderr lines."""
    from train.cli import main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setattr(sys, "argv", ["tagger", *args])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main()
    return exit_info.value.code, capsys.readouterr().err.strip().splitlines()


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> str:
    """A one-layer BERT with all-MiniLM-L6-v2's tokenizer and seeded random weights: a real local model
    folder that families can load or distil in a second (what they learn is not its concern)."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from train.models.encoder import default_encoder_path

    source = default_encoder_path()
    folder = tmp_path_factory.mktemp("tiny-encoder")
    config = AutoConfig.from_pretrained(
        source, num_hidden_layers=1, hidden_size=64, num_attention_heads=2, intermediate_size=128
    )
    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    return str(folder)


@pytest.fixture
def screenshots(tmp_path) -> Path:
    """Where browser tests save screenshots: a throw-away folder, so running the tests changes no tracked
    file; ``TAGGER_DOCS_SCREENSHOTS=1`` saves them into docs/images/ to refresh the docs' pictures."""
    if os.environ.get("TAGGER_DOCS_SCREENSHOTS") == "1":
        folder = ROOT / "docs" / "images"
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    return tmp_path
