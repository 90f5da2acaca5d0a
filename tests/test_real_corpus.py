"""The shipped real-news corpus: schema-valid, no seed leaks, rebuilt exactly from its labels, and the
agreement its dataset card reports."""

import json
import sys

from conftest import ROOT, SEEDS_FILE, read_jsonl

from train.config import Columns
from train.data.leakage import find_leaks
from train.data.loading import load_labelled
from train.domain import STANCE_LABELS, TOPIC_LABELS

REAL_FILE = ROOT / "data/train/real_news.jsonl"
ANNOTATION = ROOT / "data/annotation"
sys.path.insert(0, str(ROOT / "scripts"))


def test_real_corpus_is_schema_valid_with_provenance():
    for task, labels, column in [("multilabel", TOPIC_LABELS, "topics"), ("multiclass", STANCE_LABELS, "stance")]:
        data = load_labelled(
            REAL_FILE, task_type=task, labels=labels, columns=Columns(labels=column, target="target", group="doc_id")
        )
        assert len(data) >= 4000 and data.frame["group"].nunique() >= 300
    rows = read_jsonl(REAL_FILE)
    licences = {"public-domain", "CC BY-SA 4.0"}
    assert all(r["source"] and r["licence"] in licences and r["date"][:2] == "20" for r in rows)


def test_real_corpus_does_not_leak_seeds():
    texts = sorted({r["text"] for r in read_jsonl(REAL_FILE)})
    leaks = find_leaks(texts, [r["text"] for r in read_jsonl(SEEDS_FILE)], threshold=0.8)
    assert leaks == [], [(leak.train_text, leak.eval_text) for leak in leaks[:5]]


def test_real_corpus_is_rebuilt_exactly_from_its_labels(tmp_path):
    from real_corpus import main

    out = tmp_path / "real.jsonl"
    main(
        [
            "build",
            str(ANNOTATION / "real_news_sentences.jsonl"),
            str(ANNOTATION / "real_news_labels_a.jsonl"),
            "--settled",
            str(ANNOTATION / "real_news_double.jsonl"),
            "--round",
            str(ANNOTATION / "real_news_round_1.jsonl"),
            "--out",
            str(out),
        ]
    )
    assert out.read_bytes() == REAL_FILE.read_bytes()


def test_agreement_is_what_the_card_reports(capsys):
    from real_corpus import main

    card = (ROOT / "data/train/real_news.md").read_text(encoding="utf-8")
    for name, sentences in [("real_news_double.jsonl", 800), ("real_news_round_1.jsonl", 300)]:
        main(["agreement", str(ANNOTATION / name)])
        report = json.loads(capsys.readouterr().out)
        assert report["sentences"] >= sentences
        assert all(report[f"kappa_{t}"] >= 0.75 for t in TOPIC_LABELS) and report["kappa_stance"] >= 0.65
        assert all(f"{report[f'kappa_{t}']:.3f}" in card for t in (*TOPIC_LABELS, "stance")), name
    card = (ROOT / "data/train/real_news.md").read_text(encoding="utf-8")
    for key in ("kappa_security", "kappa_energy", "kappa_trade", "kappa_diplomacy", "kappa_stance"):
        assert f"{report[key]:.3f}" in card, key


def test_off_topic_articles_are_neutral_toward_many_pairs():
    rows = [r for r in read_jsonl(REAL_FILE) if r["doc_id"].startswith("wco")]
    assert len(rows) >= 500 and all(r["stance"] == "neutral" for r in rows)
    assert len({r["target"] for r in rows}) > 20  # not one default pair learnt as "always neutral"
