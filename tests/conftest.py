"""Shared fixtures: an isolated MLflow store per test session, and small labelled files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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
