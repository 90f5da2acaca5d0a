"""``tagger select`` (uncertainty, diverse, mixed, random; capped per article) and the Label Studio round trip."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, invoke, read_jsonl, run_main, write_jsonl

from train.errors import TaggerError
from train.selection.strategies import STRATEGIES, choose, multiclass_uncertainty, multilabel_uncertainty

COMBINED = "models:/tagger@champion"


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> Path:
    """Unlabelled sentences: the corpus rows the registry's models did not train on, labels removed."""
    rows = read_jsonl(ROOT / "data/train/news_sentences.jsonl")[1::3]
    keep = [{k: r[k] for k in ("id", "doc_id", "text", "target")} for r in rows]
    return write_jsonl(tmp_path_factory.mktemp("pool") / "pool.jsonl", keep)


@pytest.fixture(scope="module")
def scored(registry, pool):
    """The pool read and scored once by the combined model (what every strategy chooses from)."""
    from train.domain import DEFAULT_TARGET
    from train.selection.select import read_pool, score_pool

    sentences = read_pool(pool, DEFAULT_TARGET)
    return sentences, score_pool(COMBINED, sentences)


def test_uncertainty_is_one_on_the_decision_boundary():
    assert multiclass_uncertainty(np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])).round(6).tolist() == [1.0, 0.0]
    # a class offset moves the boundary: 0.4 vs 0.6 is a tie when the first class gets log(1.5)
    assert multiclass_uncertainty(np.array([[0.4, 0.6]]), np.array([np.log(1.5), 0.0]))[0] == pytest.approx(1.0)
    proba = np.array([[0.3, 0.9], [0.05, 0.95], [0.2, 0.2]])
    # the label nearest its threshold counts, its distance scaled by the room on its side of the threshold
    assert multilabel_uncertainty(proba, np.array([0.3, 0.5])).tolist() == pytest.approx([1.0, 1 / 6, 2 / 3])


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_each_strategy_gives_n_distinct_sentences_within_the_cap_and_repeats_with_its_seed(scored, strategy):
    sentences, result = scored
    args = (40, result.uncertainty, sentences.texts, sentences.groups, 1)
    picks = choose(strategy, *args, seed=7)
    chosen = [i for i, _ in picks]
    assert len(chosen) == len(set(chosen)) == 40
    assert max(Counter(sentences.groups[i] for i in chosen).values()) == 1
    assert choose(strategy, *args, seed=7) == picks
    assert [i for i, _ in choose(strategy, *args, seed=8)] != chosen or strategy in ("uncertainty", "mixed")


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_the_cap_binds_where_one_article_holds_the_most_uncertain_and_most_varied_sentences(strategy):
    words = "troops gas tariffs envoy pipeline drone summit grain".split()
    texts = [f"{w} " * 6 + w.upper() for w in words]  # article a: eight unlike sentences, all uncertain
    texts += [f"The ministers met again on day {d} of talks in {c}." for c in ("Rome", "Oslo", "Lima") for d in (1, 2)]
    groups = ["a"] * 8 + ["b", "b", "c", "c", "d", "d"]
    uncertainty = np.array([0.9] * 8 + [0.1] * 6)
    for cap, most in ((2, 2), (0, 3)):
        picks = [i for i, _ in choose(strategy, 6, uncertainty, texts, groups, cap, 0)]
        assert len(set(picks)) == 6
        taken = Counter(groups[i] for i in picks)["a"]
        assert taken <= most if cap else taken >= most or strategy == "random"


def test_uncertainty_picks_sentences_nearer_the_topic_thresholds_than_random(registry, pool):
    """Measured independently of the score: the unscaled distance of the nearest label to its threshold."""
    from train.domain import DEFAULT_TARGET
    from train.selection.select import read_pool, score_pool
    from train.tracking.packaging import load_classifier

    sentences = read_pool(pool, DEFAULT_TARGET)
    topic = load_classifier("models:/tagger-topic@champion")
    gap = np.abs(topic.predict_proba(sentences.texts) - topic.thresholds_).min(axis=1)
    result = score_pool("models:/tagger-topic@champion", sentences)
    uncertain = [i for i, _ in choose("uncertainty", 50, result.uncertainty, sentences.texts, sentences.groups, 3, 1)]
    chance = [
        gap[[i for i, _ in choose("random", 50, result.uncertainty, sentences.texts, sentences.groups, 3, s)]].mean()
        for s in range(5)
    ]
    assert gap[uncertain].mean() < 0.5 * min(chance)


def test_diverse_spreads_out_more_than_random(scored):
    from train.selection.strategies import sentence_vectors

    sentences, result = scored
    vectors = sentence_vectors(sentences.texts)

    def closest_pair(picks):
        chosen = vectors[[i for i, _ in picks]]
        similarity = (chosen @ chosen.T).toarray()
        np.fill_diagonal(similarity, -1)
        return similarity.max()

    diverse = choose("diverse", 30, result.uncertainty, sentences.texts, sentences.groups, 3, 0)
    randoms = [choose("random", 30, result.uncertainty, sentences.texts, sentences.groups, 3, s) for s in range(3)]
    assert closest_pair(diverse) < min(closest_pair(p) for p in randoms)


def test_select_writes_suggestions_in_the_schema_and_a_later_round_excludes_them(registry, pool, tmp_path):
    from train.config import Columns
    from train.data.loading import load_labelled
    from train.domain import STANCE_LABELS, TOPIC_LABELS

    out = tmp_path / "batch.jsonl"
    invoke("select", COMBINED, "--pool", str(pool), "--n", "15", "--strategy", "mixed", "--out", str(out))
    rows = read_jsonl(out)
    assert len(rows) == 15 and all(r["suggested"] is True for r in rows)
    assert [r["selection"]["rank"] for r in rows] == list(range(1, 16))
    assert {r["selection"]["strategy"] for r in rows} == {"mixed"} and rows[0]["selection"]["model"] == COMBINED
    columns = Columns(text="text", id="id", target="target", group="doc_id", labels="stance")
    with pytest.raises(TaggerError, match="line 1: labels are a model's suggestions"):
        load_labelled(out, task_type="multiclass", labels=STANCE_LABELS, columns=columns)  # not reviewed yet
    reviewed = write_jsonl(tmp_path / "reviewed.jsonl", [{**r, "suggested": False} for r in rows])
    stance = load_labelled(reviewed, task_type="multiclass", labels=STANCE_LABELS, columns=columns)
    topics = load_labelled(
        reviewed, task_type="multilabel", labels=TOPIC_LABELS, columns=columns.model_copy(update={"labels": "topics"})
    )
    assert len(stance) == len(topics) == 15
    again = tmp_path / "again.jsonl"
    invoke("select", COMBINED, "--pool", str(pool), "--n", "15", "--exclude", str(out), "--out", str(again))
    assert not {r["id"] for r in read_jsonl(again)} & {r["id"] for r in rows}


def test_a_one_task_model_suggests_its_own_labels_only(registry, pool, tmp_path):
    out = tmp_path / "stance.jsonl"
    invoke("select", "models:/tagger-stance@champion", "--pool", str(pool), "--n", "5", "--out", str(out))
    rows = read_jsonl(out)
    assert len(rows) == 5 and all("stance" in r and "topics" not in r for r in rows)


def export_of(tasks: list[dict]) -> list[dict]:
    """What Label Studio's JSON export holds once annotators have worked through ``tasks``: task 1 accepted,
    task 2 corrected, task 3 labelled twice (the later one counts), task 4 cancelled, the rest not labelled."""

    def annotation(number, result, when, cancelled=False):
        return {
            "id": number,
            "completed_by": 1,
            "result": result,
            "was_cancelled": cancelled,
            "ground_truth": False,
            "created_at": when,
            "updated_at": when,
            "lead_time": 3.2,
            "task": number,
        }

    def choices(name, values):
        return {
            "from_name": name,
            "to_name": "text",
            "type": "choices",
            "value": {"choices": values},
            "origin": "manual",
        }

    corrected = [choices("topics", ["trade", "energy"]), choices("stance", ["against"])]
    exported = []
    for number, task in enumerate(tasks, start=1):
        annotations = {
            1: [annotation(1, task["predictions"][0]["result"], "2024-05-01T10:00:00.000000Z")],
            2: [annotation(2, corrected, "2024-05-01T10:01:00.000000Z")],
            3: [
                annotation(3, [choices("stance", ["favor"])], "2024-05-01T10:02:00.000000Z"),
                annotation(4, [choices("stance", ["neutral"])], "2024-05-02T09:00:00.000000Z"),
            ],
            4: [annotation(5, [], "2024-05-01T10:03:00.000000Z", cancelled=True)],
        }.get(number, [])
        exported.append(
            {
                "id": 100 + number,
                "data": task["data"],
                "annotations": annotations,
                "predictions": task["predictions"],
                "project": 1,
                "created_at": "2024-05-01T09:00:00.000000Z",
                "updated_at": "2024-05-01T09:00:00.000000Z",
            }
        )
    return exported


def test_label_studio_round_trip_gives_the_schema(registry, pool, tmp_path):
    from train.config import Columns
    from train.data.loading import load_labelled
    from train.domain import STANCE_LABELS, TOPIC_LABELS

    tasks_file, config_file = tmp_path / "tasks.json", tmp_path / "config.xml"
    invoke(
        "select",
        COMBINED,
        "--pool",
        str(pool),
        "--n",
        "8",
        "--strategy",
        "uncertainty",
        "--format",
        "label-studio",
        "--out",
        str(tasks_file),
        "--label-config",
        str(config_file),
    )
    tasks = json.loads(tasks_file.read_text(encoding="utf-8"))
    config = ET.fromstring(config_file.read_text(encoding="utf-8"))
    controls = {c.get("name"): c for c in config.iter("Choices")}
    assert {c.get("toName") for c in controls.values()} == {config.find("Text").get("name")} == {"text"}
    assert controls["topics"].get("choice") == "multiple" and controls["stance"].get("choice").startswith("single")
    assert [c.get("value") for c in controls["topics"]] == TOPIC_LABELS
    assert [c.get("value") for c in controls["stance"]] == STANCE_LABELS
    assert len(tasks) == 8
    for task in tasks:
        assert task["data"]["text"].strip() and task["data"]["target"].startswith("closer")
        (prediction,) = task["predictions"]
        assert 0 <= prediction["score"] <= 1 and prediction["model_version"] == COMBINED
        for item in prediction["result"]:
            assert item["type"] == "choices" and item["to_name"] == "text"
            labels = TOPIC_LABELS if item["from_name"] == "topics" else STANCE_LABELS
            assert item["value"]["choices"] and set(item["value"]["choices"]) <= set(labels)
        assert [item["from_name"] for item in prediction["result"]][-1] == "stance"

    export = tmp_path / "project-1-at-2024-05-02.json"
    export.write_text(json.dumps(export_of(tasks), indent=2), encoding="utf-8")
    out = tmp_path / "labelled.jsonl"
    invoke("import-labels", str(export), "--out", str(out))
    rows = read_jsonl(out)
    assert [r["id"] for r in rows] == [t["data"]["id"] for t in tasks[:3]]
    accepted = {i["from_name"]: i["value"]["choices"] for i in tasks[0]["predictions"][0]["result"]}
    assert rows[0]["topics"] == accepted.get("topics", []) and rows[0]["stance"] == accepted["stance"][0]
    assert rows[1]["topics"] == ["energy", "trade"] and rows[1]["stance"] == "against"
    assert rows[2]["topics"] == [] and rows[2]["stance"] == "neutral"
    assert all(
        r["text"] == t["data"]["text"] and r["doc_id"] == t["data"]["doc_id"]
        for r, t in zip(rows, tasks[:3], strict=True)
    )
    assert not any("suggested" in r or "uncertainty" in r or "rank" in r for r in rows)
    columns = Columns(text="text", id="id", target="target", group="doc_id", labels="stance")
    assert load_labelled(out, task_type="multiclass", labels=STANCE_LABELS, columns=columns).labels == [
        r["stance"] for r in rows
    ]


def test_a_label_outside_the_schema_is_one_error_line_with_line_and_task(monkeypatch, capsys, tmp_path):
    good = {"from_name": "stance", "to_name": "text", "type": "choices", "value": {"choices": ["favor"]}}
    bad = {"from_name": "topics", "to_name": "text", "type": "choices", "value": {"choices": ["economy"]}}
    tasks = [
        {"id": 7, "data": {"text": "First.", "target": "closer Iran–Iraq ties"}, "annotations": [{"result": [good]}]},
        {
            "id": 9,
            "data": {"text": "Second.", "target": "closer Iran–Iraq ties"},
            "annotations": [{"result": [good, bad]}],
        },
    ]
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks, indent=2), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    store = os.environ["MLFLOW_TRACKING_URI"]
    code, lines = run_main(monkeypatch, capsys, "import-labels", str(export), "--out", str(out), store=store)
    second = 1 + [i for i, line in enumerate(json.dumps(tasks, indent=2).splitlines()) if line == "  {"][1]
    assert code == 2 and len(lines) == 1
    assert lines[0].startswith(f"error: {export} line {second} (task 2, id 9): topics label 'economy'")
    assert not out.exists()


@pytest.mark.parametrize(
    "content, expected",
    [
        ('{"text": "One."}\n{"text": \n', "line 2: invalid JSON"),
        ('{"sentence": "One."}\n', "missing column 'text'"),
        ('{"text": "One."}\n{"text": "  "}\n', "line 2: empty or missing text"),
        ("", "file is empty"),
    ],
)
def test_a_bad_pool_is_one_error_line(monkeypatch, capsys, tmp_path, content, expected):
    pool = tmp_path / "pool.jsonl"
    pool.write_text(content, encoding="utf-8")
    out = tmp_path / "batch.jsonl"
    args = ("select", COMBINED, "--pool", str(pool), "--n", "3", "--out", str(out))
    code, lines = run_main(monkeypatch, capsys, *args, store=os.environ["MLFLOW_TRACKING_URI"])
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"error: {pool}") and expected in lines[0]
    assert not out.exists()


def test_an_export_in_another_format_is_one_error_line(monkeypatch, capsys, tmp_path):
    export = tmp_path / "min.json"  # JSON-MIN: flat rows, no annotations
    export.write_text(json.dumps([{"id": 1, "text": "One.", "stance": "favor"}]), encoding="utf-8")
    args = ("import-labels", str(export), "--out", str(tmp_path / "o.jsonl"))
    code, lines = run_main(monkeypatch, capsys, *args, store=os.environ["MLFLOW_TRACKING_URI"])
    assert code == 2 and len(lines) == 1 and "line 1 (task 1, id 1)" in lines[0] and "JSON format" in lines[0]


def test_a_missing_exclude_file_is_one_error_line_naming_the_option(monkeypatch, capsys, pool, tmp_path):
    args = ("select", COMBINED, "--pool", str(pool), "--n", "3", "--exclude", str(tmp_path / "round-1.jsonl"))
    code, lines = run_main(monkeypatch, capsys, *args, store=os.environ["MLFLOW_TRACKING_URI"])
    assert code == 2 and lines == [f"error: --exclude {tmp_path / 'round-1.jsonl'}: data file not found"]


def test_the_pool_keeps_dates_and_offers_each_target_of_a_sentence(tmp_path):
    from train.selection.select import read_pool

    rows = [
        {"id": "a", "doc_id": "d1", "text": "Ankara and Baghdad signed a deal.", "target": "closer Turkey–Iraq ties"},
        {"id": "b", "doc_id": "d1", "text": "Ankara and  baghdad signed a deal.", "target": "closer Turkey–Iraq ties"},
        {"id": "c", "doc_id": "d1", "text": "Ankara and Baghdad signed a deal.", "target": "closer Turkey–Syria ties"},
        {"id": "d", "doc_id": "d2", "text": "Rain fell in Oslo.", "target": "closer Turkey–Iraq ties"},
    ]
    pool = write_jsonl(tmp_path / "pool.jsonl", [{**r, "date": "2026-05-25"} for r in rows])
    sentences = read_pool(pool, "closer Iran–Iraq ties")
    assert [r["id"] for r in sentences.records] == ["a", "c", "d"]  # b repeats a (same sentence and target)
    assert {r["date"] for r in sentences.records} == {"2026-05-25"}  # not a timestamp
    labelled = write_jsonl(tmp_path / "done.jsonl", [{"text": rows[2]["text"], "target": rows[2]["target"]}])
    assert [r["id"] for r in read_pool(pool, "x", exclude=(labelled,)).records] == ["a", "d"]
    no_target = write_jsonl(tmp_path / "done2.jsonl", [{"text": rows[0]["text"]}])
    assert [r["id"] for r in read_pool(pool, "x", exclude=(no_target,)).records] == ["d"]
