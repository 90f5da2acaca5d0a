"""Models are saved as data: a manifest and native weights, no pickle anywhere; older pickled models
still load through the legacy loader, and ``tagger migrate`` converts them without a change of score."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, invoke, run_main

from train.models.base import TextClassifier
from train.models.catalog import BUILTIN
from train.models.checks import toy_problem
from train.registry import build_model, model_params_schema

LEGACY = ROOT / "tests/fixtures/legacy_models/cbb1427"
PICKLE_NAMES = (".pkl", ".pickle", ".joblib")


def is_pickle(data: bytes) -> bool:
    """A pickle of protocol 2 to 5 starts with PROTO (0x80) and the protocol number."""
    return len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5


def pickles_in(folder: Path) -> list[str]:
    """Every pickle under ``folder``: by name, by header, and inside zip files (skops files are zips)."""
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = str(path.relative_to(folder))
        data = path.read_bytes()
        if path.name.endswith(PICKLE_NAMES) or is_pickle(data[:2]):
            found.append(name)
        elif zipfile.is_zipfile(io.BytesIO(data)):
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                for member in archive.namelist():
                    head = archive.open(member).read(2)
                    if member.endswith(PICKLE_NAMES) or is_pickle(head):
                        found.append(f"{name}:{member}")
    return found


def test_the_scan_finds_pickles_by_name_header_and_inside_zips(tmp_path):
    import pickle

    (tmp_path / "a.joblib").write_bytes(b"not even a pickle")
    (tmp_path / "weights.bin").write_bytes(pickle.dumps({"x": 1}, protocol=4))
    with zipfile.ZipFile(tmp_path / "head.skops", "w") as archive:
        archive.writestr("schema.json", "{}")
        archive.writestr("blob", pickle.dumps([1, 2], protocol=2))
    (tmp_path / "ok.json").write_text("{}")
    assert pickles_in(tmp_path) == ["a.joblib", "head.skops:blob", "weights.bin"]


def fitted(family: str, multilabel: bool, **extra):
    X, y, labels = toy_problem(multilabel)
    params = model_params_schema(family)(**{**BUILTIN[family].quick_params, **extra}).model_dump()
    model = build_model(family, "multilabel" if multilabel else "multiclass", labels, params, 7).fit(X, y, X, y)
    model.tune_decision(X, y)
    return model, X


SLOW = {"embedding_logreg", "setfit", "transformer", "static_logreg"}


@pytest.mark.parametrize(
    "family", [pytest.param(f, marks=pytest.mark.slow) if f in SLOW else f for f in sorted(BUILTIN)]
)
def test_every_family_saves_data_and_no_pickle(family, tmp_path, monkeypatch, request):
    monkeypatch.setenv("TAGGER_HOME", str(tmp_path / "home"))
    extra = {"name_or_path": request.getfixturevalue("tiny_encoder")} if family in SLOW else {}
    if family == "tfidf_logreg":
        extra = {"cross_target": True, "cross_target_min_sentences": 1, "cross_target_char": True}
    for multilabel in (True, False):
        model, X = fitted(family, multilabel, **extra)
        folder = tmp_path / f"model-{multilabel}"
        model.save(folder)
        assert pickles_in(folder) == []
        assert not list(folder.rglob("pytorch_model.bin"))
        manifest = json.loads((folder / "family.json").read_text())
        assert manifest["family"] == family and manifest["format_version"] == 1
        assert manifest["labels"] == model.labels and manifest["priors"] is not None
        loaded = TextClassifier.load(folder)
        assert type(loaded) is type(model)
        np.testing.assert_allclose(loaded.predict_proba(X), model.predict_proba(X), atol=1e-6)
        assert loaded.predict(X) == model.predict(X)


@pytest.mark.slow
def test_logged_models_one_task_and_bundle_hold_no_pickle(tmp_path):
    import mlflow

    from train.tracking.packaging import bundle_model_arguments, load_wrapper, log_classifier

    folders = {}
    for task, multilabel in (("topic", True), ("stance", False)):
        model, X = fitted("tfidf_logreg", multilabel)
        with mlflow.start_run():
            info = log_classifier(model, X, tmp_path / task)
        local = Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(tmp_path / f"{task}-logged")))
        assert pickles_in(local) == [] and not (local / "python_model.pkl").exists()
        assert load_wrapper(str(local)).classifier.predict(X) == model.predict(X)
        pyfunc = mlflow.pyfunc.load_model(str(local)).predict(X)  # MLflow's own loader runs the code file
        assert list(pyfunc.filter(like="score_").columns) == [f"score_{label}" for label in model.labels]
        folders[task] = str(local / "artifacts" / "classifier")
    bundle = tmp_path / "bundle"
    mlflow.pyfunc.save_model(str(bundle), **bundle_model_arguments(folders))
    assert pickles_in(bundle) == []
    wrapper = load_wrapper(str(bundle))
    assert wrapper.topic.labels and wrapper.stance.labels
    frame = pd.DataFrame({"text": ["Gas talks resumed."], "target": ["closer Iran–Iraq ties"]})
    assert set(mlflow.pyfunc.load_model(str(bundle)).predict(frame).columns) >= {"topics", "stance"}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"family": "no_such_family"}, "unknown family 'no_such_family'"),
        ({"format_version": 2}, "model format version 2 is newer than this tagger reads (1)"),
    ],
)
def test_load_refuses_an_unknown_family_or_a_newer_format_in_one_line(change, message, tmp_path, monkeypatch, capsys):
    import shutil

    folder = tmp_path / "model"
    invoke("migrate", str(LEGACY / "stance"), "--out", str(folder))
    manifest = folder / "artifacts/classifier/family.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), **change}))
    (tmp_path / "in.txt").write_text("Gas talks resumed.\n")
    store = f"sqlite:///{tmp_path / 'db'}"
    args = ("predict", str(folder), "--input", str(tmp_path / "in.txt"))
    code, lines = run_main(monkeypatch, capsys, *args, store=store)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    shutil.rmtree(folder)


def expected_scores():
    expected = json.loads((LEGACY / "expected.json").read_text(encoding="utf-8"))
    return pd.DataFrame(expected["inputs"]), expected


def test_legacy_models_load_and_migrate_to_the_same_scores(tmp_path, caplog):
    from train.tracking.packaging import load_wrapper

    frame, expected = expected_scores()
    with caplog.at_level("WARNING", logger="tagger"):
        stance = load_wrapper(str(LEGACY / "stance")).classifier
    assert "tagger migrate" in caplog.text
    np.testing.assert_allclose(stance.predict_proba(frame), expected["stance"], atol=1e-12)
    bundle = load_wrapper(str(LEGACY / "tagger"))
    np.testing.assert_allclose(bundle.topic.predict_proba(frame), expected["tagger"]["topic"], atol=1e-12)
    for name in ("stance", "tagger"):
        out = tmp_path / name
        assert "migrated" in invoke("migrate", str(LEGACY / name), "--out", str(out)).stdout
        assert pickles_in(out) == []
        caplog.clear()
        with caplog.at_level("WARNING", logger="tagger"):
            migrated = load_wrapper(str(out))
        assert "tagger migrate" not in caplog.text
        if name == "stance":
            np.testing.assert_allclose(migrated.classifier.predict_proba(frame), expected["stance"], atol=1e-12)
        else:
            np.testing.assert_allclose(migrated.topic.predict_proba(frame), expected["tagger"]["topic"], atol=1e-12)
            np.testing.assert_allclose(migrated.stance.predict_proba(frame), expected["tagger"]["stance"], atol=1e-12)


def test_migrating_a_model_in_the_data_format_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    invoke("migrate", str(LEGACY / "stance"), "--out", str(tmp_path / "new"))
    store = f"sqlite:///{tmp_path / 'db'}"
    args = ("migrate", str(tmp_path / "new"), "--out", str(tmp_path / "x"))
    code, lines = run_main(monkeypatch, capsys, *args, store=store)
    assert code == 2
    assert lines == [f"error: model '{tmp_path / 'new'}' is already in the data format; nothing to migrate"]


@pytest.mark.slow
def test_migrate_a_registered_model_moves_its_alias_to_a_new_version(tmp_path):
    """A legacy model registered as ``tagger@champion``: migrate re-logs its run and moves the alias."""
    import mlflow

    from train.tracking.packaging import load_wrapper

    client = mlflow.MlflowClient()
    with mlflow.start_run(run_name="old-bundle", experiment_id=mlflow.create_experiment("legacy-models")) as run:
        mlflow.log_params({"model.family": "tfidf_logreg"})
        mlflow.log_metric("validation/f1_macro", 0.5)
        mlflow.log_artifacts(str(LEGACY / "tagger"), "model")
    old = mlflow.register_model(f"runs:/{run.info.run_id}/model", "tagger-legacy", tags={"topic_version": "1"})
    client.set_registered_model_alias("tagger-legacy", "champion", old.version)
    out = invoke("migrate", "models:/tagger-legacy@champion").stdout
    assert "@champion moved" in out, out
    new = client.get_model_version_by_alias("tagger-legacy", "champion")
    assert new.version != old.version and new.tags["topic_version"] == "1"
    assert new.tags["tagger.migrated_from"] == f"models:/tagger-legacy/{old.version}"
    new_run = client.get_run(new.run_id)
    assert new_run.data.tags["tagger.migrated_from"] == run.info.run_id
    assert new_run.data.params["model.family"] == "tfidf_logreg" and new_run.data.metrics["validation/f1_macro"] == 0.5
    local = Path(mlflow.artifacts.download_artifacts("models:/tagger-legacy@champion", dst_path=str(tmp_path / "m")))
    assert pickles_in(local) == []
    frame, expected = expected_scores()
    wrapper = load_wrapper("models:/tagger-legacy@champion")
    np.testing.assert_allclose(wrapper.stance.predict_proba(frame), expected["tagger"]["stance"], atol=1e-12)


def test_a_skops_file_with_an_untrusted_type_is_refused(tmp_path):
    import collections

    import skops.io as sio

    from train.models.persistence import ModelFormatError

    folder = tmp_path / "model"
    fitted("tfidf_logreg", True)[0].save(folder)
    sio.dump({"steps": collections.Counter("ab")}, folder / "pipeline.skops")
    with pytest.raises(ModelFormatError, match=r"pipeline.skops: holds types that are not trusted.*Counter"):
        TextClassifier.load(folder)


def test_tfidf_vocabularies_round_trip_exactly_for_any_text(tmp_path):
    """Vocabularies are saved as arrays (UTF-8 bytes with offsets), not dicts: terms with NUL, byte-order
    marks, emoji and combining marks come back as they were, and so do the scores."""
    odd = ["nul\x00inside", "bom \ufeff mark", "emoji 🛢️ gas", "combining é e\u0301", "tab\tand\u200bzero"]
    X = pd.DataFrame({"text": [f"{t} talks {i}" for i, t in enumerate(odd * 4)], "target": ["t"] * 20})
    y = [["energy"] if i % 2 else ["diplomacy"] for i in range(20)]
    model = build_model("tfidf_logreg", "multilabel", ["energy", "diplomacy"], {"char_analyzer": "char"}, 13)
    model.fit(X, y)
    model.save(tmp_path / "model")
    loaded = TextClassifier.load(tmp_path / "model")
    features = model.pipeline_.named_steps["features"].named_transformers_
    back = loaded.pipeline_.named_steps["features"].named_transformers_
    for block in ("word", "char"):
        assert back[block].vocabulary_ == features[block].vocabulary_
    assert any("\x00" in term for term in back["char"].vocabulary_)
    assert np.array_equal(loaded.predict_proba(X), model.predict_proba(X))
