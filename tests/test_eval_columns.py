"""Evaluation sets keep their own column mapping; every mapped column (an inherited group too) must exist."""

import csv
from pathlib import Path

import mlflow
import pytest
from conftest import read_jsonl, write_jsonl

from train.config import load_config
from train.errors import TaggerError
from train.training.pipeline import prepare, train

ROOT = Path(__file__).resolve().parent.parent
TOPIC = ROOT / "configs/topic/tfidf_logreg.yaml"


def own_csv(path: Path, group: bool = False) -> Path:
    """The shipped written corpus as a user's CSV: columns sentence, tags (';'-joined), maybe doc."""
    rows = read_jsonl(ROOT / "data/train/news_sentences.jsonl")[:300]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sentence", "tags", *(["doc"] if group else [])])
        for r in rows:
            writer.writerow([r["text"], ";".join(r["topics"]), *([r["doc_id"]] if group else [])])
    return path


def user_config(tmp_path: Path, data: Path, columns: str, sets: str = "") -> Path:
    """A config extending the shipped topic config: the user's CSV with ``columns``, maybe its own sets."""
    path = tmp_path / "mine.yaml"
    mapping = f"{{id: null, text: sentence, labels: tags{columns}}}"
    body = f"extends: {TOPIC}\ndata:\n  train: {data}\n  label_separator: ';'\n  columns: {mapping}\n"
    path.write_text(body + (f"evaluation:\n  sets:\n{sets}" if sets else ""), "utf-8")
    return path


SEEDS = ROOT / "data/eval/seeds.jsonl"


def test_inherited_seeds_keep_their_own_mapping(tmp_path):
    """A config that extends a shipped one and maps its own CSV still reads the seeds with theirs."""
    data = own_csv(tmp_path / "mine.csv", group=True)
    path = user_config(tmp_path, data, ", group: doc")
    prepared = prepare(load_config(path))
    seeds = prepared.eval_sets["seeds"]
    assert len(seeds) == 98 and seeds.frame["group"].nunique() == 5
    assert prepared.data.frame["group"].notna().all()


def test_a_set_without_columns_that_the_training_mapping_cannot_read_names_its_columns(tmp_path):
    data = own_csv(tmp_path / "mine.csv")
    seeds_copy = write_jsonl(tmp_path / "held.jsonl", read_jsonl(ROOT / "data/eval/seeds.jsonl"))
    sets = f"    - {{name: seeds, path: {SEEDS}, columns: {{labels: topics}}}}\n"
    sets += f"    - {{name: held, path: {seeds_copy}}}\n"
    path = user_config(tmp_path, data, ", group: null", sets)
    with pytest.raises(TaggerError) as info:
        prepare(load_config(path))
    message = str(info.value)
    assert message.startswith(f"{seeds_copy}: missing column 'sentence'")
    assert "evaluation set 'held' has no columns of its own, so it was read with data.columns" in message
    assert message.endswith("map it with evaluation.sets[1].columns.text")


def test_an_inherited_group_the_file_lacks_is_an_error(tmp_path):
    """configs/base.yaml maps group: doc_id; a user's file without it is refused, naming the field."""
    data = own_csv(tmp_path / "mine.csv")
    path = user_config(tmp_path, data, "")
    with pytest.raises(TaggerError) as info:
        prepare(load_config(path))
    assert str(info.value) == (
        f"{data}: missing column 'doc_id' (columns: sentence, tags); map it with data.columns.group "
        "(or data.columns.group: null if its sentences do not come in documents)"
    )


def test_a_set_with_its_own_columns_names_them(tmp_path):
    data = own_csv(tmp_path / "mine.csv")
    sets = f"    - {{name: seeds, path: {SEEDS}, columns: {{labels: topics, group: article}}}}\n"
    path = user_config(tmp_path, data, ", group: null", sets)
    expected = r"missing column 'article' .*; map it with evaluation\.sets\[0\]\.columns\.group"
    with pytest.raises(TaggerError, match=expected):
        prepare(load_config(path))


@pytest.mark.slow
def test_the_error_comes_before_any_run(tmp_path):
    """Through ``train``: the refusal leaves nothing in the store."""
    data = own_csv(tmp_path / "mine.csv")
    path = user_config(tmp_path, data, "")
    mlflow.set_tracking_uri(__import__("os").environ["MLFLOW_TRACKING_URI"])
    before = len(mlflow.search_runs(search_all_experiments=True))
    with pytest.raises(TaggerError, match=r"data\.columns\.group"):
        train(load_config(path), config_path=path)
    assert len(mlflow.search_runs(search_all_experiments=True)) == before
