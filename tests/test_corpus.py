"""The shipped starter corpus meets the requirements stated in its dataset card."""

from conftest import TRAIN_FILE, read_jsonl
from corpus_stats import corpus_stats

from train.config import Columns
from train.data.loading import load_labelled
from train.domain import STANCE_LABELS, TOPIC_LABELS


def test_corpus_is_schema_valid():
    for task, labels, column in [("multilabel", TOPIC_LABELS, "topics"), ("multiclass", STANCE_LABELS, "stance")]:
        data = load_labelled(
            TRAIN_FILE, task_type=task, labels=labels, columns=Columns(labels=column, target="target", group="doc_id")
        )
        assert len(data) == len(read_jsonl(TRAIN_FILE))


def test_corpus_balance():
    s = corpus_stats(TRAIN_FILE)
    n = s["sentences"]
    assert n >= 1500
    assert all(count >= 300 for count in s["topics"].values()), s["topics"]
    assert s["multi_topic"] >= 0.20 * n
    assert s["no_topic"] >= 0.10 * n
    assert all(count >= 0.25 * n for count in s["stance"].values()), s["stance"]
    assert len(s["targets"]) >= 15
    assert s["targets"].get("closer Iran–Iraq ties", 0) <= 0.15 * n


def test_targets_are_well_formed_and_texts_unique():
    rows = read_jsonl(TRAIN_FILE)
    assert all(r["target"].startswith("closer ") and "–" in r["target"] and r["target"].endswith(" ties") for r in rows)
    texts = [r["text"].strip().lower() for r in rows]
    assert len(set(texts)) == len(texts)
