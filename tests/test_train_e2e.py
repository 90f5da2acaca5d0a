"""Real training runs into a real (temporary) MLflow store, driven through the CLI."""

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from click.testing import CliRunner
from conftest import SEEDS_FILE, read_jsonl, write_jsonl

from train.cli import cli
from train.config import load_config
from train.errors import TaggerError
from train.training.pipeline import train

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args, input=None):
    result = CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def _train(config_path, small_train, *extra):
    config = load_config(ROOT / config_path, [f"data.train={small_train}", "evaluation.bootstrap_samples=200", *extra])
    return train(config, config_path=config_path)


@pytest.mark.slow
def test_topic_run_logs_everything(small_train, tmp_path):
    run_id = _train("configs/topic/tfidf_logreg.yaml", small_train)
    run = mlflow.get_run(run_id)
    assert run.info.status == "FINISHED"
    m = run.data.metrics
    for name in [
        "dev/f1_macro",
        "dev/f1_micro",
        "dev/hamming_loss",
        "seeds/f1_macro",
        "seeds/f1_macro_ci_low",
        "seeds/f1_macro_ci_high",
        "seeds/f1_micro",
        "seeds/hamming_loss",
    ]:
        assert name in m, name
    assert m["seeds/f1_macro_ci_low"] <= m["seeds/f1_macro"] <= m["seeds/f1_macro_ci_high"]
    # a handful of columns in the UI: per-label figures, subset accuracy and the other intervals are in
    # the set's metrics JSON and its per-label table
    assert len(m) <= 20 and not [k for k in m if "security" in k or "subset" in k or "micro_ci" in k], sorted(m)
    report_path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="reports/seeds_metrics.json")
    seeds_report = json.loads(Path(report_path).read_text())
    for name in ("f1_micro", "hamming_loss"):  # every headline metric has an interval there
        low, high = seeds_report["metrics"][f"{name}_ci_low"], seeds_report["metrics"][f"{name}_ci_high"]
        assert low <= seeds_report["metrics"][name] <= high, name
    assert "subset_accuracy" in seeds_report["metrics"]
    table = mlflow.load_table("reports/seeds_per_label.json", run_ids=[run_id])
    assert list(table["label"]) == ["security", "energy", "trade", "diplomacy"]
    assert table.loc[table["label"] == "energy", "support"].item() > 0
    tags = run.data.tags
    assert tags["task"] == "topic" and tags["model_family"] == "tfidf_logreg"
    assert len(tags["git_commit"]) == 40
    assert len(tags["dataset_sha256.seeds"]) == 64 and len(tags["dataset_sha256.train.jsonl"]) == 64
    assert "version.scikit-learn" in tags
    assert run.data.params["model.family"] == "tfidf_logreg"
    assert run.data.params["model.params.C"] == "4.0"
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id)}
    assert {"config.yaml", "summary.json", "reports", "environment.json"} <= artifacts
    reports = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id, "reports")}
    assert {
        "reports/seeds_confusion.png",
        "reports/seeds_predictions.csv",
        "reports/seeds_misclassified.csv",
        "reports/dev_metrics.json",
        "reports/dev_per_label.json",
        "reports/seeds_per_label.json",
    } <= reports
    assert {i.dataset.name for i in run.inputs.dataset_inputs} >= {"seeds", "train.jsonl:train", "train.jsonl:dev"}

    # evaluate: by run id, writing metrics JSON; the numbers match what the run logged on the seeds
    out = tmp_path / "metrics.json"
    run_cli("evaluate", run_id, "--data", str(SEEDS_FILE), "--output", str(out), "--report-dir", str(tmp_path / "r"))
    report = json.loads(out.read_text())
    assert report["n"] == len(read_jsonl(SEEDS_FILE))
    assert report["metrics"]["f1_macro"] == round(m["seeds/f1_macro"], 4)  # printed rounded to 4 decimals
    assert (tmp_path / "r" / "seeds_confusion.png").stat().st_size > 1000

    # predict: JSON Lines out, from a file and from stdin, by runs:/ URI
    lines = run_cli(
        "predict",
        f"runs:/{run_id}/model",
        "--input",
        "-",
        input='{"text": "The pipeline deal secures gas supplies for the winter."}\nTroops shelled the border.\n',
    )
    rows = [json.loads(x) for x in lines.stdout.strip().splitlines()]
    assert len(rows) == 2 and set(rows[0]["scores"]) == {"security", "energy", "trade", "diplomacy"}
    assert "energy" in rows[0]["topics"]

    # runs table: the run is listed with its metric
    listing = run_cli("runs", "--task", "topic", "--json")
    assert run_id in listing.stdout


@pytest.mark.slow
def test_stance_run_uses_target_and_favg(small_train):
    run_id = _train("configs/stance/tfidf_svm.yaml", small_train)
    run = mlflow.get_run(run_id)
    assert {"seeds/f_avg", "seeds/accuracy", "dev/f1_macro"} <= set(run.data.metrics)
    table = mlflow.load_table("reports/seeds_per_label.json", run_ids=[run_id]).set_index("label")
    assert set(table.index) == {"favor", "against", "neutral"}
    f1 = table["f1"]
    assert run.data.metrics["seeds/f_avg"] == pytest.approx((f1["favor"] + f1["against"]) / 2)
    result = run_cli(
        "predict",
        run_id,
        "--input",
        "-",
        "--target",
        "closer Turkey–Iraq ties",
        input="Ankara and Baghdad signed five agreements to deepen cooperation.\n",
    )
    row = json.loads(result.stdout)
    assert row["target"] == "closer Turkey–Iraq ties" and row["stance"] in {"favor", "against", "neutral"}


def test_leaked_training_data_is_refused_before_any_run(small_train, tmp_path):
    rows = read_jsonl(small_train) + [{**read_jsonl(SEEDS_FILE)[10], "id": "leak-1", "doc_id": "leak"}]
    leaked = write_jsonl(tmp_path / "leaked.jsonl", rows)
    mlflow.set_tracking_uri(__import__("os").environ["MLFLOW_TRACKING_URI"])
    before = len(mlflow.search_runs(search_all_experiments=True))
    with pytest.raises(TaggerError, match=r"1 training sentence\(s\) match evaluation set 'seeds'"):
        _train("configs/topic/tfidf_logreg.yaml", leaked)
    assert len(mlflow.search_runs(search_all_experiments=True)) == before
    # explicitly allowed: trains, and says so
    run_id = _train("configs/topic/tfidf_logreg.yaml", leaked, "data.allow_leakage=true", "tracking.log_model=false")
    assert mlflow.get_run(run_id).info.status == "FINISHED"


@pytest.mark.slow
def test_eval_label_unseen_in_training_warns(small_train, tmp_path, caplog):
    rows = [r for r in read_jsonl(small_train) if "energy" not in r["topics"]]
    no_energy = write_jsonl(tmp_path / "no_energy.jsonl", rows)
    run_id = _train("configs/topic/tfidf_logreg.yaml", no_energy, "tracking.log_model=false")
    assert "label 'energy' occurs in this set but never in the training data" in caplog.text
    table = mlflow.load_table("reports/seeds_per_label.json", run_ids=[run_id]).set_index("label")
    assert table.loc["energy", "f1"] == 0 and table.loc["energy", "support"] > 0


def test_cli_user_error_is_one_line_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "train.cli", "train", "configs/topic/tfidf_logreg.yaml", "--set", "model.params.Cee=1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "unknown key 'model.params.Cee'; did you mean 'C'?" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "command", ["train", "evaluate", "predict", "runs", "split-seeds", "promote", "tag", "export", "serve"]
)
def test_help_everywhere(command):
    assert "Usage" in run_cli(command, "--help").output


def test_bad_model_reference_is_clear(tmp_path):
    result = CliRunner().invoke(cli, ["evaluate", str(tmp_path), "--data", str(SEEDS_FILE)])
    assert isinstance(result.exception, TaggerError)
    assert "not an MLflow model folder" in str(result.exception)
