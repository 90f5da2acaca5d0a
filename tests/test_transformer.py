"""Transformer and embedding families: a tiny real fine-tune through MLflow, reload and ONNX parity."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import SEEDS_FILE, invoke, read_jsonl, run_main

from train.config import load_config
from train.errors import TaggerError
from train.models.encoder import default_encoder_path
from train.tracking.packaging import load_classifier
from train.training.pipeline import train

ROOT = Path(__file__).resolve().parent.parent
SEEDS = pd.DataFrame(read_jsonl(SEEDS_FILE))[["text", "target"]]
ONNX_TOLERANCE = 1e-4  # fp32 ONNX Runtime vs torch, absolute difference of probabilities
INT8_TOLERANCE = 0.1  # dynamic int8 quantisation, absolute difference of probabilities


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A few fine-tuning steps on a small subset, end to end through MLflow (shared by the tests below)."""
    rows = read_jsonl(ROOT / "data/train/news_sentences.jsonl")[::10]
    path = tmp_path_factory.mktemp("data") / "tiny.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    overrides = [
        f"data.train={path}",
        "model.params.max_steps=8",
        "model.params.batch_size=8",
        "model.params.max_length=48",
        "model.params.logging_steps=2",
        "evaluation.bootstrap_samples=50",
    ]
    config = load_config(ROOT / "configs/topic/minilm_finetune.yaml", overrides)
    scratch = tmp_path_factory.mktemp("tmp")  # a temporary folder of its own: a parallel test's files are not ours
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tempfile, "tempdir", str(scratch))
        run_id = train(config, config_path="configs/topic/minilm_finetune.yaml")
    # the parity check's ONNX exports (about 110 MB) are not left behind
    assert not list(scratch.glob("tagger-onnx-*"))
    return run_id


@pytest.mark.slow
def test_tiny_finetune_is_tracked(tiny_run):
    run = mlflow.get_run(tiny_run)
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    assert {"seeds/f1_macro", "dev/f1_macro", "model_parameters", "model_size_mb"} <= set(metrics)
    assert 20e6 < metrics["model_parameters"] < 25e6  # all-MiniLM-L6-v2 + a 4-label head
    history = mlflow.MlflowClient().get_metric_history(tiny_run, "train/loss")
    assert len(history) >= 3 and [m.step for m in history] == sorted(m.step for m in history)
    assert mlflow.MlflowClient().get_metric_history(tiny_run, "dev/epoch_f1_macro")
    assert all(m.value > 0 for m in mlflow.MlflowClient().get_metric_history(tiny_run, "train/epoch_seconds"))


def test_early_stopping_keeps_the_best_epoch_in_memory():
    """Dev F1 0.5, 0.7, 0.6 with patience 1: training stops after the third epoch, with the second's weights."""
    import torch
    from transformers import TrainerControl

    from train.models.transformer import _KeepBest

    model = torch.nn.Linear(2, 1)
    keep = _KeepBest(patience=1)
    weights = {}
    for epoch, score in enumerate([0.5, 0.7, 0.6]):
        with torch.no_grad():
            model.weight.fill_(epoch)
        weights[epoch] = model.weight.clone()
        control = TrainerControl()
        keep.on_evaluate(None, None, control, metrics={"eval_f1_macro": score}, model=model)
        assert control.should_training_stop == (epoch == 2)
    keep.on_train_end(None, None, TrainerControl(), model=model)
    assert torch.equal(model.weight, weights[1])


@pytest.mark.slow
def test_reload_in_fresh_process_predicts_identically(tiny_run, tmp_path):
    here = load_classifier(tiny_run).predict_proba(SEEDS)
    script = (
        "import sys, mlflow, pandas as pd, numpy as np\n"
        f"frame = pd.read_json({str(SEEDS_FILE)!r}, lines=True)[['text', 'target']]\n"
        f"out = mlflow.pyfunc.load_model('runs:/{tiny_run}/model').predict(frame)\n"
        "np.save(sys.argv[1], out.filter(like='score_').to_numpy())\n"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "scores.npy")], check=True, timeout=300)
    there = np.load(tmp_path / "scores.npy")
    np.testing.assert_allclose(there, here, atol=1e-6)


@pytest.mark.slow
def test_onnx_backends_match_torch(tiny_run):
    classifier = load_classifier(tiny_run)
    torch_scores = classifier.predict_proba(SEEDS)
    torch_labels = classifier.decide(torch_scores)
    classifier.set_backend("onnx")
    onnx_scores = classifier.predict_proba(SEEDS)
    assert np.abs(onnx_scores - torch_scores).max() < ONNX_TOLERANCE
    assert classifier.decide(onnx_scores) == torch_labels
    classifier.set_backend("onnx-int8", force=True)  # a few training steps leave scores at the thresholds
    int8_scores = classifier.predict_proba(SEEDS)
    assert np.abs(int8_scores - torch_scores).max() < INT8_TOLERANCE
    # the embeddings and layers 0-2 stay fp32 (their MatMuls keep their names), layers 3-5 are int8
    import onnx

    from train.models.transformer import sensitive_nodes

    kept = sensitive_nodes(classifier.onnx_dir_ / "model.onnx")
    assert any("/embeddings/" in n for n in kept) and any("/layer.2/" in n for n in kept)
    assert not any("/layer.3/" in n for n in kept)
    ops = {n.name: n.op_type for n in onnx.load(str(classifier.onnx_dir_ / "model.int8.onnx")).graph.node}
    assert all(ops[n] == "MatMul" for n in kept if n.endswith("/MatMul"))
    quantized = [n for n, op in ops.items() if op == "MatMulInteger"]
    assert any("/layer.5/" in n for n in quantized)
    assert not any("/embeddings/" in n or any(f"/layer.{i}/" in n for i in (0, 1, 2)) for n in quantized)
    with pytest.raises(ValueError, match="no .tensorrt. backend .it has: torch, onnx, onnx-int8."):
        classifier.set_backend("tensorrt")


@pytest.mark.slow
def test_cli_predict_with_onnx_backend(tiny_run):
    from click.testing import CliRunner

    from train.cli import cli

    result = CliRunner().invoke(
        cli,
        ["predict", tiny_run, "--input", "-", "--backend", "auto"],
        input="Gas exports resumed through the pipeline.\n",
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.stdout)["scores"]) == {"security", "energy", "trade", "diplomacy"}


def test_missing_model_folder_and_missing_tokenizer_are_config_errors(tmp_path):
    with pytest.raises(TaggerError, match=r"model.params.name_or_path.*does not exist"):
        load_config(ROOT / "configs/topic/minilm_finetune.yaml", [f"model.params.name_or_path={tmp_path / 'nope'}"])
    (tmp_path / "bare").mkdir()
    shutil.copy(default_encoder_path() / "config.json", tmp_path / "bare" / "config.json")
    with pytest.raises(TaggerError, match="holds no tokenizer"):
        load_config(
            ROOT / "configs/stance/minilm_embed_logreg.yaml", [f"model.params.name_or_path={tmp_path / 'bare'}"]
        )


@pytest.mark.slow
def test_hub_id_resolves_through_the_offline_hub_cache(tmp_path):
    """The real hub code path (a repo id, not a folder), served from a local hub cache with HF_HUB_OFFLINE=1."""
    repo = tmp_path / "hub" / "models--local--minilm"
    shutil.copytree(
        default_encoder_path(),
        repo / "snapshots" / "0123456789abcdef",
        ignore=shutil.ignore_patterns("*.safetensors", "1_Pooling"),
    )
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123456789abcdef")
    script = (
        "from train.models.encoder import resolve_encoder, load_tokenizer\n"
        "from train.errors import TaggerError\n"
        "assert resolve_encoder('local/minilm') == 'local/minilm'\n"
        "tok = load_tokenizer('local/minilm')\n"
        "assert tok('Gas imports')['input_ids'][0] == tok.cls_token_id\n"
        "try:\n    load_tokenizer('local/absent')\nexcept TaggerError as exc:\n    print('ERR', exc)\n"
    )
    env = {**__import__("os").environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "ERR cannot load a tokenizer from 'local/absent' (HF_HUB_OFFLINE=1: only cached models)" in proc.stdout


@pytest.mark.slow
def test_embedding_family_caches_encodings(small_train, tmp_path):
    overrides = [
        f"data.train={small_train}",
        "evaluation.bootstrap_samples=50",
        "tracking.log_model=false",
        f"model.params.cache_dir={tmp_path / 'cache'}",
    ]
    config = load_config(ROOT / "configs/stance/minilm_embed_logreg.yaml", overrides)
    first = train(config, config_path="configs/stance/minilm_embed_logreg.yaml")
    files = sorted((tmp_path / "cache").rglob("*.npy"))
    assert len(files) >= len(read_jsonl(small_train))  # sentences + targets + seeds
    stamps = {f: f.stat().st_mtime_ns for f in files}
    second = train(config, config_path="configs/stance/minilm_embed_logreg.yaml")
    assert {f: f.stat().st_mtime_ns for f in sorted((tmp_path / "cache").rglob("*.npy"))} == stamps  # all hits
    a, b = (mlflow.get_run(r).data.metrics["seeds/f1_macro"] for r in (first, second))
    assert a == pytest.approx(b)


@pytest.mark.slow
def test_tagger_backend_applies_to_the_models_that_have_it(tiny_run, small_train):
    """``tagger serve/tag --backend onnx-int8``: the transformer switches, the TF-IDF stance model is left as is."""
    from train.errors import TaggerError
    from train.serving.tagger import Tagger

    config = load_config(
        ROOT / "configs/stance/tfidf_logreg.yaml", [f"data.train={small_train}", "evaluation.bootstrap_samples=0"]
    )
    stance_run = train(config, config_path="configs/stance/tfidf_logreg.yaml")
    tagger = Tagger.load(tiny_run, stance_run, backend="onnx-int8", force_backend=True)
    assert tagger.topic.backend == "onnx-int8"
    int8 = tagger.tag_sentences([{"text": "Gas exports resumed through the pipeline."}], "closer Iran–Iraq ties")
    torch_scores = Tagger.load(tiny_run, stance_run).tag_sentences(
        [{"text": "Gas exports resumed through the pipeline."}], "closer Iran–Iraq ties"
    )
    assert int8[0]["stance_scores"] == torch_scores[0]["stance_scores"]
    for label, score in torch_scores[0]["topic_scores"].items():
        assert abs(int8[0]["topic_scores"][label] - score) <= INT8_TOLERANCE
    with pytest.raises(TaggerError, match="--backend onnx: no model here has it"):
        Tagger.load(stance_run, stance_run, backend="onnx")


@pytest.mark.slow
def test_loaded_embedding_model_caches_in_memory_only(tmp_path):
    """Serving (a loaded model) writes no embedding files from user text and keeps a bounded cache."""
    from train.models.base import TextClassifier
    from train.models.checks import toy_problem
    from train.registry import build_model

    X, y, labels = toy_problem(multilabel=False, n=12)
    model = build_model("embedding_logreg", "multiclass", labels, {"cache_dir": str(tmp_path / "cache")}, 13)
    model.fit(X, y)
    files = set((tmp_path / "cache").rglob("*.npy"))
    model.save(tmp_path / "model")
    loaded = TextClassifier.load(tmp_path / "model")
    loaded.predict_proba(X.head(2))  # builds the cache
    loaded.cache_.memory_items = 5
    loaded.predict_proba(X.assign(text=[f"New sentence {i} about gas." for i in range(len(X))]))
    assert set((tmp_path / "cache").rglob("*.npy")) == files
    assert len(loaded.cache_.memory) == 5


@pytest.mark.slow
def test_training_measures_backend_parity(tiny_run):
    metrics = mlflow.get_run(tiny_run).data.metrics
    for backend in ("torch", "onnx", "onnx-int8"):
        assert 0 <= metrics[f"parity/{backend}/agreement"] <= 1
        assert metrics[f"parity/{backend}/sentences_per_second"] > 0
    assert metrics["parity/torch/agreement"] == 1 and metrics["parity/torch/max_abs_diff"] == 0
    assert metrics["parity/onnx/max_abs_diff"] < ONNX_TOLERANCE
    classifier = load_classifier(tiny_run)
    assert classifier.parity_["onnx-int8"]["agreement"] == metrics["parity/onnx-int8/agreement"]


@pytest.mark.slow
def test_backend_below_parity_is_refused_unless_forced_and_auto_skips_it(tiny_run, tmp_path, monkeypatch, capsys):
    from train.models.base import TextClassifier

    classifier = load_classifier(tiny_run)
    speeds = {"torch": 100.0, "onnx": 200.0, "onnx-int8": 400.0}
    for backend, figures in classifier.parity_.items():
        figures.update(sentences_per_second=speeds[backend], agreement=1.0)
    classifier.parity_["onnx-int8"].update(agreement=0.95, sentences=200.0)
    assert classifier.set_backend("auto") == "onnx"  # int8 is fastest but fell below 99%
    classifier.parity_["onnx-int8"]["agreement"] = 0.995
    assert classifier.set_backend("auto") == "onnx-int8"
    classifier.parity_["onnx-int8"]["agreement"] = 0.95
    classifier.set_backend("torch")
    folder = Path(mlflow.artifacts.download_artifacts(f"runs:/{tiny_run}/model", dst_path=str(tmp_path)))
    classifier.save(folder / "artifacts" / "classifier")  # the logged model, with these parity figures

    sentences = tmp_path / "in.jsonl"
    sentences.write_text('{"text": "Gas exports resumed through the pipeline."}\n', encoding="utf-8")
    store = os.environ["MLFLOW_TRACKING_URI"]
    command = ["predict", str(folder), "--input", str(sentences), "--backend", "onnx-int8"]
    code, lines = run_main(monkeypatch, capsys, *command, store=store)
    assert code == 2
    assert lines == [
        "error: --backend onnx-int8: backend 'onnx-int8' agrees with torch on 95.0% of 200 sentences "
        f"(max score difference {classifier.parity_['onnx-int8']['max_abs_diff']:.3f}), below the 99% needed: "
        "use --backend auto, or --force-backend to use it anyway"
    ]
    forced = invoke(*command, "--force-backend")
    assert set(json.loads(forced.stdout)["scores"]) == {"security", "energy", "trade", "diplomacy"}
    assert TextClassifier.load(folder / "artifacts" / "classifier").set_backend("auto") == "onnx"


@pytest.mark.slow
def test_model_without_parity_figures_keeps_its_backend_under_auto(tiny_run):
    """A transformer without parity figures (one pickled before they existed: the legacy loader gives it
    none): auto keeps its configured backend, and every backend may still be chosen by name."""
    classifier = load_classifier(tiny_run)
    classifier.parity_ = {}
    assert classifier.set_backend("auto") == "torch"
    assert classifier.set_backend("onnx-int8") == "onnx-int8"
    assert classifier.set_backend("auto") == "onnx-int8"
    assert classifier.predict_proba(SEEDS.head(3)).shape == (3, 4)


def test_compare_scores_counts_label_agreement():
    from train.models.parity import compare_scores

    reference = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])
    other = np.array([[0.8, 0.2], [0.45, 0.55], [0.2, 0.8]])
    figures = compare_scores(reference, other, lambda p: list(p.argmax(axis=1)))
    assert figures["agreement"] == pytest.approx(2 / 3)
    assert figures["max_abs_diff"] == pytest.approx(0.15)
    assert figures["mean_abs_diff"] == pytest.approx((0.1 + 0.1 + 0.15 + 0.15) / 6)
    topics = compare_scores(reference, other, lambda p: [[i for i in range(2) if row[i] >= 0.5] for row in p])
    assert topics["agreement"] == pytest.approx(2 / 3)
