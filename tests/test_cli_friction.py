"""The newcomer's CLI friction list (issue 23): a runs table that fits 100 columns with short ids every
command takes, valid JSON, A and B named in compare, ± std after cv, sweep progress and baseline,
tag-batch progress, named sub-models, one output column name, no MLflow chatter."""

from __future__ import annotations

import json
import re
import uuid

import mlflow
import pandas as pd
import pytest
from conftest import invoke

from train.errors import TaggerError

LONG_NAME = "tfidf_logreg-with-a-very-long-run-name-0101-120000"


def _no_nan(name: str):
    raise AssertionError(f"invalid JSON constant {name}")


@pytest.fixture
def fake_runs(tmp_path):
    """Three finished topic runs in their own experiment, each with seeds predictions (fast: no training).

    The first has no CV and no seeds score (missing values), the third a very long name.
    """
    from train.tracking import store

    store.setup()
    experiment = f"friction-{uuid.uuid4().hex[:8]}"
    experiment_id = store.ensure_experiment(experiment)
    predictions = pd.DataFrame(
        {
            "id": [str(i) for i in range(6)],
            "gold": ["energy", "trade", "security;energy", "diplomacy", "trade", "energy"],
            "predicted": ["energy", "trade", "security", "diplomacy", "energy", "energy"],
            **{f"score_{label}": [0.5] * 6 for label in ("security", "energy", "trade", "diplomacy")},
        }
    )
    ids = []
    for i, (name, family, metrics) in enumerate(
        [
            ("tfidf_logreg-0101-120000", "tfidf_logreg", {"dev/f1_macro": 0.8143}),
            (
                "tfidf_svm-cv5x1-0101-120000",
                "tfidf_svm",
                {"cv/f1_macro_mean": 0.801, "cv/f1_macro_std": 0.012, "dev/f1_macro": 0.79, "seeds/f1_macro": 0.7},
            ),
            (LONG_NAME, "minilm_logreg", {"dev/f1_macro": 0.75, "seeds/f1_macro": 0.66}),
        ]
    ):
        tags = {"model_family": family, "task_type": "multilabel", "dataset_sha256.seeds": "ab" * 32}
        with mlflow.start_run(experiment_id=experiment_id, run_name=name, tags=tags) as run:
            score = metrics["dev/f1_macro"]
            mlflow.log_metrics({**metrics, "dev/f1_macro_ci_low": score - 0.02, "dev/f1_macro_ci_high": score + 0.02})
            frame = predictions.copy()
            if i == 1:
                frame.loc[4, "predicted"] = "trade"
            path = tmp_path / f"r{i}" / "seeds_predictions.csv"  # what compare reads: reports/<set>_predictions.csv
            path.parent.mkdir()
            frame.to_csv(path, index=False)
            mlflow.log_artifact(str(path), "reports")
        ids.append(run.info.run_id)
    return experiment, ids


def test_runs_table_fits_100_columns_with_short_ids_every_command_takes(fake_runs, capsys):
    from train.tracking.packaging import model_uri
    from train.tracking.runs import list_runs, narrow_view, render_table, short_header
    from train.tracking.store import resolve_run_id

    experiment, ids = fake_runs
    table = list_runs("topic", "validation/f1_macro", experiment)
    render_table(table, "validation/f1_macro", width=100)
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 100, out
    header = next(line for line in lines if re.search(r"\brun\b", line) and "name" in line)
    expected = [short_header(c) for c in narrow_view(table).columns]  # every column the table has, whole
    assert expected == ["run", "name", "family", "valid", "kind", "tie", "dev", "seeds (test)", "cv"]
    for name in expected:
        assert re.search(rf"(^|\s){re.escape(name)}(\s|$)", header), (name, header)
    assert "…" not in header and "[0.794, 0.834]" in out  # the dev score beside its interval
    shown = re.findall(r"^\s*([0-9a-f]{8,31})\s", out, flags=re.M)
    assert len(shown) == 3 and all(len(s) >= 8 for s in shown)
    for prefix in shown:  # each shown id names exactly one run, for every command
        full = resolve_run_id(prefix)
        assert full in ids and full.startswith(prefix)
        assert model_uri(prefix) == f"runs:/{full}/model"
        assert model_uri(f"runs:/{prefix}/model") == f"runs:/{full}/model"
    assert "0.801 ± 0.012" in out and LONG_NAME not in out  # the long name gave way, nothing else did
    render_table(table, "validation/f1_macro", width=300, wide=True)
    wide = capsys.readouterr().out
    assert all(run_id in wide for run_id in ids) and LONG_NAME in wide and "validation/f1_macro" in wide


def test_short_ids_grow_until_unique_and_ambiguous_prefixes_are_refused(fake_runs):
    from train.tracking.store import resolve_run_id, short_ids

    a, b = "abcdef0123" + "0" * 22, "abcdef0124" + "0" * 22
    assert short_ids([a], [a, b]) == ["abcdef0123"] and short_ids([b, "1" * 32]) == ["abcdef01", "11111111"]
    with pytest.raises(TaggerError, match="at least 8"):
        resolve_run_id("abc")
    with pytest.raises(TaggerError, match="no run id starts with it"):
        resolve_run_id("f" * 12 if not fake_runs[1][0].startswith("f" * 12) else "e" * 12)
    with pytest.raises(TaggerError, match="run '0123': not a run id"):
        invoke_error("compare", "0123", fake_runs[1][0])


def invoke_error(*args) -> None:
    from train.cli import cli

    cli.main(list(args), standalone_mode=False)


def test_runs_json_is_valid_json_with_null_for_missing(fake_runs):
    experiment, ids = fake_runs
    out = invoke("runs", "--task", "topic", "--experiment", experiment, "--json").stdout
    rows = [json.loads(line, parse_constant=_no_nan) for line in out.splitlines()]
    assert {row["run_id"] for row in rows} == set(ids)  # whole ids in JSON
    no_cv = next(row for row in rows if row["run_id"] == ids[0])
    assert no_cv["seeds/f1_macro (test)"] is None and no_cv["cv/f1_macro"] in (None, "")
    assert "NaN" not in out


def test_compare_names_runs_a_and_b_and_takes_short_ids(fake_runs):
    _, ids = fake_runs
    out = invoke("compare", ids[0][:8], ids[1][:10], "--samples", "200").stdout
    lines = out.splitlines()
    assert lines[0] == f"A: {ids[0][:8]}  tfidf_logreg-0101-120000  (tfidf_logreg)"
    assert lines[1] == f"B: {ids[1][:8]}  tfidf_svm-cv5x1-0101-120000  (tfidf_svm)"
    result = json.loads(invoke("compare", ids[0][:8], ids[1], "--samples", "200", "--json").stdout)
    assert result["run_a"] == ids[0] and result["runs"]["b"]["family"] == "tfidf_svm"


@pytest.mark.slow  # a 3-fold CV (about 4 s)
def test_cv_logs_each_headline_mean_with_its_std(small_train, tmp_path, monkeypatch, caplog):
    from test_recorder import QUICK, TOPIC, MemoryRecorder

    from train.config import load_config
    from train.training.cv import cross_validate

    monkeypatch.setenv("TAGGER_HOME", str(tmp_path))
    config = load_config(TOPIC, [f"data.train={small_train}", *QUICK, "tracking.log_model=false"])
    with caplog.at_level("INFO", logger="tagger"):
        cross_validate(config, MemoryRecorder(), config_path=TOPIC, folds=3)
    assert re.search(r"cv 3x1 \(mean ± std over folds\): f1_macro 0\.\d{3} ± 0\.\d{3}, f1_micro", caplog.text)


@pytest.mark.slow  # two cross-validated trials (about 5 s)
def test_sweep_reports_each_trial_and_the_baseline_beside_the_best_rounded(small_train, tmp_path, monkeypatch, caplog):
    import yaml
    from test_recorder import QUICK, TOPIC, MemoryRecorder

    from train.config import load_config
    from train.training.sweep import SweepOptions, sweep

    monkeypatch.setenv("TAGGER_HOME", str(tmp_path))
    space = tmp_path / "space.yaml"
    params = {
        "model.params.C": {"type": "float", "low": 0.1, "high": 10, "log": True},
        "model.params.word_ngram_range": {"type": "categorical", "choices": [[1, 1], [1, 2]]},
    }
    space.write_text(yaml.safe_dump({"params": params}))
    config = load_config(TOPIC, [f"data.train={small_train}", *QUICK, "split.folds=3"])
    own = (config.model.params["C"], list(config.model.params["word_ngram_range"]))
    options = SweepOptions(space, 2, storage=f"sqlite:///{tmp_path / 'optuna.db'}", study="base", out=tmp_path / "b")
    with caplog.at_level("INFO", logger="tagger"):
        result = sweep(config, MemoryRecorder(), options=options)
    import optuna

    study = optuna.load_study(study_name="base", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    first = study.trials[0]
    assert first.params["model.params.C"] == own[0]  # trial 0: the config's own values
    assert json.loads(first.params["model.params.word_ngram_range"]) == own[1]
    assert result.baseline_trial == 0 and result.baseline_value == pytest.approx(first.value)
    text = result.describe()
    assert re.search(r"^baseline: trial 0, 0\.\d{4} \(the config's own values\)$", text, flags=re.M), text
    best = re.search(r"^best: trial (\d), 0\.\d{4}, [+-]0\.\d{4} over the baseline \(C=([0-9.e+-]+), ", text, re.M)
    assert best, text
    assert len(best[2].replace(".", "").lstrip("0")) <= 4  # 4 significant digits at most
    log = caplog.text  # a start line and a result line per trial: params, score, best so far, seconds
    assert re.search(r"trial 0 \[1/2, baseline: the config's own values\]: C=4\.0, word_ngram_range=\[1, 2\]", log)
    assert re.search(r"trial 1 \[2/2\]: cv/f1_macro_mean 0\.\d{4} in \d+ s; best so far 0\.\d{4} \(trial [01]\)", log)
    header = result.best_config.read_text().splitlines()
    assert any(line.startswith("# Baseline (the config's own values, trial 0): 0.") for line in header)
    assert any(line.startswith("# Best values, rounded: C=") for line in header)
