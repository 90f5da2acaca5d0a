"""What a new user meets: whole run ids, the combined model in the CLI, score tables, the MLflow UI view,
quick config errors, clear messages and answers any HTTP client can read."""

import json
import subprocess
import sys
import urllib.error
import urllib.request

import mlflow
import pytest
from conftest import ROOT, SEEDS_FILE, invoke

from train.config import load_config
from train.errors import TaggerError


def test_runs_table_shows_uncut_short_ids_on_a_narrow_terminal_and_whole_ones_wide(registry, capsys):
    from train.tracking.runs import list_runs, render_table

    table = list_runs("topic", "seeds/f1_macro")
    render_table(table, "seeds/f1_macro", width=80)
    out = capsys.readouterr().out
    assert all(f" {run_id[:8]} " in f" {out} ".replace("\n", " \n ") for run_id in table["run_id"])
    render_table(table, "seeds/f1_macro", width=200, wide=True)
    wide = capsys.readouterr().out
    assert all(run_id in wide for run_id in table["run_id"]), wide


def test_metric_typo_gets_a_suggestion(registry):
    from train.tracking.runs import list_runs

    with pytest.raises(TaggerError, match="did you mean 'seeds/f1_macro'"):
        list_runs("topic", "seeds/f1_macr")


def test_combined_model_predicts_from_the_cli(registry, tmp_path):
    lines = invoke("predict", "models:/tagger@champion", "--input", "-", input="Gas exports to Turkey resumed.\n")
    row = json.loads(lines.stdout)
    assert set(row) >= {"text", "target", "topics", "topic_scores", "stance", "stance_scores"}
    assert row["target"] == "closer Iran–Iraq ties"  # the default target, as for tag and serve
    signature = mlflow.models.get_model_info("models:/tagger@champion").signature
    assert {c.name: c.required for c in signature.inputs.inputs} == {"text": True, "target": False}


def test_stance_predict_defaults_the_target(registry):
    run_id = registry[0][("stance", "tfidf_logreg")]
    row = json.loads(invoke("predict", run_id, "--input", "-", input="Talks resumed.\n").stdout)
    assert row["target"] == "closer Iran–Iraq ties" and row["stance"] in {"favor", "against", "neutral"}


def test_training_prints_scores_and_describes_the_run(registry):
    from train.domain import experiment_name
    from train.tracking.store import EXPERIMENT_KIND_TAG, MODEL_TRAINING

    run = mlflow.get_run(registry[0][("topic", "tfidf_logreg")])
    note = run.data.tags["mlflow.note.content"]
    assert "f1_macro" in note and "seeds" in note and "hamming_loss" in note
    experiment = mlflow.get_experiment_by_name(experiment_name("topic"))
    assert experiment.tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING  # the UI opens in its training view


def test_version_flag():
    assert invoke("--version").stdout.strip() == "tagger, version 0.1.0"


def test_set_errors_blame_the_set():
    with pytest.raises(TaggerError, match=r"^--set model.params.C=-1: 'model.params.C'"):
        load_config(ROOT / "configs/topic/tfidf_logreg.yaml", ["model.params.C=-1"])


def test_config_errors_import_no_heavy_library():
    """A config error is reported before scikit-learn, MLflow or PyTorch are imported (well under a second)."""
    script = (
        "import sys\n"
        "from train.cli import main\n"
        "sys.argv = ['tagger', 'train', 'configs/topic/tfidf_logreg.yaml', '--set', 'model.params.C=-1']\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    code = exc.code\n"
        "heavy = [m for m in ('sklearn', 'mlflow', 'torch', 'datasets') if m in sys.modules]\n"
        "print(code, heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "2 []", proc.stdout + proc.stderr


def test_evaluate_prints_rounded_metrics(registry):
    run_id = registry[0][("topic", "tfidf_logreg")]
    report = json.loads(invoke("evaluate", run_id, "--data", str(SEEDS_FILE)).stdout)
    assert all(round(v, 4) == v for v in report["metrics"].values())


@pytest.mark.slow
def test_oversize_body_is_read_by_any_client(server):
    """urllib sends the whole body before it reads: the 413 must reach it, not a broken pipe."""
    body = json.dumps({"text": "x" * 3_000_000}).encode()
    request = urllib.request.Request(f"{server}/v1/tag", data=body, headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(request, timeout=60)
    assert answer.value.code == 413


@pytest.mark.slow
def test_docs_assets_are_served_locally(server):
    import httpx

    page = httpx.get(f"{server}/docs").text
    assert "cdn.jsdelivr.net" not in page and "/static-offline-docs/swagger-ui-bundle.js" in page
    assert httpx.get(f"{server}/static-offline-docs/swagger-ui-bundle.js").status_code == 200


def test_legacy_layout_models_still_load():
    """Models pickled by the flat package (train.pyfunc.TaggerModel) load and score with today's layout."""
    from train.tracking.packaging import load_classifier

    for task in ("topic", "stance"):
        classifier = load_classifier(str(ROOT / "tests/fixtures/legacy_models" / task))
        proba = classifier.predict_proba(
            __import__("pandas").DataFrame({"text": ["Gas exports resumed."], "target": ["closer Iran–Iraq ties"]})
        )
        assert proba.shape == (1, len(classifier.labels))
