"""Bad data gets one clear error naming the file, line, id, column or label."""

import pandas as pd
import pytest
from conftest import write_jsonl

from train.config import Columns
from train.data.loading import load_labelled
from train.errors import TaggerError

TOPICS = ["security", "energy", "trade", "diplomacy"]
STANCES = ["favor", "against", "neutral"]
TOPIC_COLS = Columns(labels="topics")
STANCE_COLS = Columns(labels="stance", target="target")


def row(i, **kw):
    base = {
        "id": f"x-{i}",
        "text": f"Sentence number {i} about gas.",
        "topics": ["energy"],
        "stance": "neutral",
        "target": "closer A–B ties",
    }
    return {**base, **kw}


def load(path, cols=TOPIC_COLS, task="multilabel", labels=TOPICS, **kw):
    return load_labelled(path, task_type=task, labels=labels, columns=cols, **kw)


def test_loads_valid_file(tmp_path):
    data = load(write_jsonl(tmp_path / "ok.jsonl", [row(1), row(2, topics=["trade", "energy"])]))
    assert data.labels == [["energy"], ["energy", "trade"]]
    assert len(data.sha256) == 64


@pytest.mark.parametrize(
    ("rows", "cols", "task", "labels", "message"),
    [
        (
            [row(1), row(2, topics=["sports"])],
            TOPIC_COLS,
            "multilabel",
            TOPICS,
            r"line 2 \(id x-2\): label 'sports' is not in the schema",
        ),
        ([row(1), row(1)], TOPIC_COLS, "multilabel", TOPICS, r"line 2: duplicate id 'x-1' \(first at line 1\)"),
        ([row(1), row(2, text="   ")], TOPIC_COLS, "multilabel", TOPICS, r"line 2 \(id x-2\): empty text"),
        ([row(1), row(2, target="")], STANCE_COLS, "multiclass", STANCES, r"line 2 \(id x-2\): missing target"),
        ([row(1, stance="pro")], STANCE_COLS, "multiclass", STANCES, r"label 'pro' is not in the schema"),
        ([row(1)], Columns(labels="tags"), "multilabel", TOPICS, r"missing column 'tags'.*columns.labels"),
    ],
)
def test_bad_rows(tmp_path, rows, cols, task, labels, message):
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(TaggerError, match=message) as info:
        load(path, cols, task, labels)
    assert str(path) in str(info.value)


def test_missing_empty_and_non_utf8_files(tmp_path):
    with pytest.raises(TaggerError, match="file not found"):
        load(tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").write_bytes(b"")
    with pytest.raises(TaggerError, match="file is empty"):
        load(tmp_path / "empty.jsonl")
    (tmp_path / "blank.jsonl").write_text("\n\n  \n", encoding="utf-8")
    with pytest.raises(TaggerError, match="file is empty"):
        load(tmp_path / "blank.jsonl")
    (tmp_path / "latin1.jsonl").write_bytes(
        b'{"id": "1", "text": "ok", "topics": []}\n{"id": "2", "text": "caf\xe9"}\n'
    )
    with pytest.raises(TaggerError, match=r"latin1.jsonl line 2: not valid UTF-8"):
        load(tmp_path / "latin1.jsonl")

    # the same bytes read as the encoding the file really uses
    data = load(tmp_path / "latin1.jsonl", encoding="latin-1", require_labels=False)
    assert data.texts == ["ok", "café"]


def test_semeval_style_tsv_in_cp1252(tmp_path):
    """A public stance benchmark's layout: tab-separated, Windows-1252, its own column names and labels."""
    path = tmp_path / "stance.tsv"
    path.write_bytes(
        "ID\tTarget\tTweet\tStance\n"
        "101\tClimate Change is a Real Concern\tWe need action now \u2013 no more excuses\tFAVOR\n"
        "102\tClimate Change is a Real Concern\tIt\u2019s all a hoax\tAGAINST\n"
        "103\tAtheism\tSunday caf\u00e9 with friends\tNONE\n".encode("cp1252")
    )
    cols = Columns(id="ID", text="Tweet", labels="Stance", target="Target")
    label_map = {"FAVOR": "favor", "AGAINST": "against", "NONE": "neutral"}
    with pytest.raises(TaggerError, match=r"stance.tsv line 2: not valid UTF-8 .*data.encoding"):
        load(path, cols, "multiclass", STANCES, label_map=label_map)
    data = load(path, cols, "multiclass", STANCES, label_map=label_map, encoding="cp1252")
    assert data.labels == ["favor", "against", "neutral"]
    assert data.texts[1] == "It\u2019s all a hoax" and data.frame["target"][2] == "Atheism"
    assert data.frame["line"].tolist() == [2, 3, 4]


def test_invalid_json_line(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"id": "1", "text": "fine", "topics": []}\n{"id": "2", "text": \n', encoding="utf-8")
    with pytest.raises(TaggerError, match=r"broken.jsonl line 2: invalid JSON"):
        load(path)


def test_csv_with_separator_and_label_map(tmp_path):
    path = tmp_path / "bench.csv"
    pd.DataFrame(
        {"sid": ["a", "b"], "sentence": ["Oil deal signed.", "Troops moved."], "tags": ["ENERGY|TRADE", "SEC"]}
    ).to_csv(path, index=False)
    data = load(
        path,
        Columns(id="sid", text="sentence", labels="tags"),
        label_separator="|",
        label_map={"ENERGY": "energy", "TRADE": "trade", "SEC": "security"},
    )
    assert data.labels == [["energy", "trade"], ["security"]]
    assert data.frame["line"].tolist() == [2, 3]


def test_id_column_is_optional_unless_named(tmp_path):
    path = tmp_path / "no_ids.csv"
    pd.DataFrame({"text": ["Oil deal signed.", "Troops moved."], "label": ["energy", "security"]}).to_csv(
        path, index=False
    )
    data = load(path, Columns(labels="label"))  # the default id column is absent: ids are line numbers
    assert data.frame["id"].tolist() == ["2", "3"]
    with pytest.raises(TaggerError, match="missing column 'sid'.*columns.id"):
        load(path, Columns(id="sid", labels="label"))


def test_parquet_with_binary_label_columns_and_int_classes(tmp_path):
    path = tmp_path / "bench.parquet"
    pd.DataFrame(
        {"text": ["One.", "Two."], "security": [1, 0], "energy": [0, 1], "Target": ["T", "T"], "label": [0, 2]}
    ).to_parquet(path)
    topics = load(path, Columns(id=None, labels=["security", "energy"]))
    assert topics.labels == [["security"], ["energy"]]
    stance = load(
        path,
        Columns(id=None, labels="label", target="Target"),
        "multiclass",
        STANCES,
        label_map={"0": "against", "1": "neutral", "2": "favor"},
    )
    assert stance.labels == ["against", "favor"]
    assert stance.frame["target"].tolist() == ["T", "T"]


def test_eval_set_with_an_unknown_extension_is_read_in_the_training_format(tmp_path):
    """A benchmark's train.txt and test.txt: one ``data.format`` covers both."""
    from train.config import Config
    from train.data.loading import load_for

    for name in ("train.txt", "test.txt"):
        (tmp_path / name).write_bytes("ID\tTweet\tStance\n1\tGas caf\u00e9 deal\tFAVOR\n".encode("cp1252"))
    config = Config.model_validate(
        {
            "task": {"name": "bench", "type": "multiclass", "labels": STANCES},
            "data": {
                "train": str(tmp_path / "train.txt"),
                "format": "tsv",
                "encoding": "cp1252",
                "columns": {"id": "ID", "text": "Tweet", "labels": "Stance"},
                "label_map": {"FAVOR": "favor"},
            },
            "model": {"family": "tfidf_logreg"},
            "evaluation": {"sets": [{"name": "test", "path": str(tmp_path / "test.txt")}]},
        }
    )
    test = load_for(config, config.evaluation.sets[0])
    assert test.texts == ["Gas caf\u00e9 deal"] and test.labels == ["favor"]
