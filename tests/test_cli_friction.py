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


@pytest.fixture(scope="module")
def model_folders(tmp_path_factory):
    """A topic and a stance TF-IDF model fitted on a toy problem, saved as MLflow model folders (about 1 s)."""
    from test_model_format import fitted

    from train.tracking.packaging import classifier_model_arguments

    root = tmp_path_factory.mktemp("models")
    folders = {}
    for task, multilabel in (("topic", True), ("stance", False)):
        model, X = fitted("tfidf_logreg", multilabel)
        mlflow.pyfunc.save_model(str(root / task), **classifier_model_arguments(model, X, root / f"{task}-work"))
        folders[task] = root / task
    return folders


@pytest.mark.slow  # saves two MLflow models once per module (about 7 s), loads them
def test_one_output_column_name_for_the_topic_labels(model_folders):
    from train.tracking.packaging import load_wrapper, predict_frame, predict_records

    frame = pd.DataFrame({"text": ["Gas talks resumed."], "target": ["closer Iran–Iraq ties"]})
    topic, stance = (load_wrapper(str(model_folders[task])).classifier for task in ("topic", "stance"))
    assert list(predict_frame(topic, frame).columns)[0] == "topics"  # pyfunc of one task, as the combined model
    assert list(predict_frame(stance, frame).columns)[0] == "stance"
    rows, _ = predict_records(str(model_folders["topic"]), [{"text": "Gas talks resumed."}], "closer Iran–Iraq ties")
    assert set(rows[0]) == {"text", "topics", "scores"}
    signature = mlflow.models.get_model_info(str(model_folders["topic"])).signature
    assert signature.outputs.input_names()[0] == "topics"


@pytest.mark.slow  # saves two MLflow models once per module (about 7 s), loads them
def test_combined_model_names_its_sub_models_topic_and_stance(model_folders, tmp_path):
    import shutil

    import yaml

    from train.tracking.packaging import bundle_model_arguments, load_wrapper

    folders = {}
    for task, folder in model_folders.items():  # as promote passes them: two folders named 'classifier'
        shutil.copytree(folder / "artifacts" / "classifier", tmp_path / task / "artifacts" / "classifier")
        folders[task] = str(tmp_path / task / "artifacts" / "classifier")
    bundle = tmp_path / "bundle"
    mlflow.pyfunc.save_model(str(bundle), **bundle_model_arguments(folders))
    assert sorted(p.name for p in (bundle / "artifacts").iterdir()) == ["stance", "topic"]
    flavor = yaml.safe_load((bundle / "MLmodel").read_text())["flavors"]["python_function"]
    assert {key: spec["path"] for key, spec in flavor["artifacts"].items()} == {
        "topic": "artifacts/topic",
        "stance": "artifacts/stance",
    }
    wrapper = load_wrapper(str(bundle))
    assert wrapper.topic.multilabel and not wrapper.stance.multilabel
    out = mlflow.pyfunc.load_model(str(bundle)).predict(pd.DataFrame({"text": ["Gas talks resumed."]}))
    assert list(out.columns[:2]) == ["topics", "stance"]


@pytest.mark.slow  # saves two MLflow models once per module (about 7 s), loads them
def test_tag_batch_shows_progress_for_a_small_input(model_folders, tmp_path, monkeypatch, caplog):
    import train.batch as batch

    rows = [{"text": f"Gas talks resumed on day {i}."} for i in range(250)]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    monkeypatch.setattr(batch, "PIECE_ROWS", 100)
    monkeypatch.setattr(batch, "PROGRESS_SECONDS", 0.0)  # every piece reports (else: every 5 s)
    job = batch.BatchJob(source, tmp_path / "out", model=str(model_folders["topic"]))
    with caplog.at_level("INFO", logger="tagger"):
        result = batch.tag_local(job, workers=1)
    assert result["rows"] == 250
    lines = [r.getMessage() for r in caplog.records if r.name == "tagger"]
    assert any(line.startswith("tagging 250 sentences with ") for line in lines), lines
    progress = [line for line in lines if line.startswith("tagged ")]
    assert progress == [
        "tagged 100 of 250 sentences (40%)",
        "tagged 200 of 250 sentences (80%)",
        "tagged 250 of 250 sentences (100%)",
    ]
    assert "topics" in pd.read_parquet(tmp_path / "out").columns


TAGGER_LINE = re.compile(r"^\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL)\s")
MLFLOW_CHATTER = ("Registered model", "Created version", "Successfully registered", "alembic", "Downloading", "🏃")


def only_tagger_lines(stderr: str) -> list[str]:
    """The stderr lines that tagger did not write: neither a log line nor the body of one that ends in ':'."""
    foreign, in_message = [], False
    for line in stderr.splitlines():
        if TAGGER_LINE.match(line):
            in_message = line.rstrip().endswith(":")  # a score table follows
        elif not (in_message and line.strip()) or any(text in line for text in MLFLOW_CHATTER):
            foreign.append(line)
    return foreign


@pytest.mark.slow  # trains two small models, then promote, export and train as CLI processes (about 40 s)
def test_train_promote_and_export_print_no_mlflow_chatter(small_train, tmp_path):
    import os
    import subprocess
    import sys

    from conftest import ROOT

    env = {**os.environ, "TAGGER_HOME": str(tmp_path), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    quick = [f"data.train={small_train}", "evaluation.bootstrap_samples=0", "model.params.char_ngram_range=null"]
    sets = [arg for value in quick for arg in ("--set", value)]

    def tagger(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [sys.executable, "-m", "train.cli", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr
        assert only_tagger_lines(done.stderr) == [], done.stderr
        return done

    tagger("train", "configs/stance/tfidf_logreg.yaml", *sets)
    tagger("train", "configs/topic/tfidf_logreg.yaml", *sets)
    tagger("promote", "--task", "stance")  # registers tagger-stance: MLflow would print three lines
    promoted = tagger("promote", "--task", "topic")  # and tagger-topic, then the combined model
    assert "tagger (topic + stance) v1 is now @champion" in promoted.stdout
    exported = tmp_path / "exported"
    tagger("export", "--task", "tagger", "--out", str(exported))
    assert sorted(p.name for p in (exported / "artifacts").iterdir()) == ["stance", "topic"]
    loud = subprocess.run(
        [sys.executable, "-m", "train.cli", "-v", "promote", "--task", "topic", "--dry-run"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert loud.returncode == 0 and "DEBUG" in loud.stderr  # -v: everything, MLflow's own messages too
