"""``tagger tag-batch``: local and Spark engines give the same Parquet output; clear errors before any work."""

from __future__ import annotations

import importlib.util
import json
import shutil

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


def test_local_batch_tagging_streams_chunks(registry, sentences, tmp_path):
    out = tmp_path / "local"
    invoke("tag-batch", str(sentences), str(out), "--chunk-size", "3000")
    frame = read_output(out)
    assert len(frame) == 10_000 and frame["id"].tolist() == list(range(10_000))
    assert {"topics", "stance", "topic_score_trade", "stance_score_favor", "topics_input"} <= set(frame.columns)
    assert set(frame["stance"]) <= {"favor", "against", "neutral"}
    # rows without a target got the default one: the same text tagged alone agrees
    expected = invoke("predict", "models:/tagger@champion", "--input", "-", input=frame["text"][0] + "\n").stdout
    assert json.loads(expected)["stance"] == frame["stance"][0]


@pytest.mark.skipif(
    importlib.util.find_spec("pyspark") is None, reason="PySpark is not installed (make test installs .[spark])"
)
def test_spark_and_local_outputs_are_identical(registry, sentences, tmp_path):
    if not shutil.which("java"):
        pytest.skip("Java is not installed; run 'make services'")
    invoke("tag-batch", str(sentences), str(tmp_path / "local"))
    invoke("tag-batch", str(sentences), str(tmp_path / "spark"), "--engine", "spark", "--master", "local[2]")
    local, spark = read_output(tmp_path / "local"), read_output(tmp_path / "spark")
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
        (["{data}", "{data}"], "exists and is not an empty folder"),
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
