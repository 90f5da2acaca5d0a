"""Explanations: exact contributions for the TF-IDF families, occlusion for the others, in the API,
the service and the CLI."""

from __future__ import annotations

import json
import re

import httpx
import numpy as np
import pandas as pd
import pytest
from conftest import invoke

from train.models.catalog import BUILTIN
from train.models.checks import toy_problem
from train.models.explain import Budget, _origin, explain, explain_occlusion, without
from train.registry import build_model

STANCE_PARAMS = {"use_target": True, "mask_target_actors": True, "cross_target": True, "cross_target_min_sentences": 5}


def fitted(family: str, multilabel: bool, **params):
    X, y, labels = toy_problem(multilabel)
    params = {**BUILTIN[family].quick_params, **params}
    model = build_model(family, "multilabel" if multilabel else "multiclass", labels, params, 7)
    return model.fit(X, y), X


def features_of(model, X: pd.DataFrame):
    return model.pipeline_[0].transform(pd.DataFrame(model._inputs(X)))


def parts(entry: dict) -> float:
    """bias + the words' weights (all of them, not only the top ones) + the target's block + the rest."""
    return entry["bias"] + entry["blocks"].get("target", 0.0) + entry["unattributed"]


@pytest.mark.parametrize(
    ("multilabel", "params"),
    [
        (True, {}),
        (False, STANCE_PARAMS),
        (False, {**STANCE_PARAMS, "char_analyzer": "char", "cross_target_char": True}),
    ],
    ids=["topic", "stance-masked-crossed", "stance-char"],
)
def test_linear_contributions_add_up_to_the_models_decision(multilabel, params):
    model, X = fitted("tfidf_logreg", multilabel, **params)
    X = X.head(12).copy()
    X.loc[0, "text"] = "Xandrian troops and Yorvik   militia met, then    talks."  # masked actors, runs of spaces
    found = explain(model, X, top_k=100)
    decision = model.pipeline_[-1].decision_function(features_of(model, X))
    decision = decision if decision.ndim == 2 else np.column_stack([-decision, decision])
    for row, explanation in enumerate(found):
        assert explanation["method"] == "linear" and not explanation["truncated"]
        for j, label in enumerate(model.labels):
            entry = explanation["labels"][label]
            assert entry["value"] == pytest.approx(decision[row, j], abs=1e-3)
            assert entry["score"] == pytest.approx(model.predict_proba(X.iloc[[row]])[0, j], abs=1e-3)
            assert abs(entry["unattributed"]) < 1e-3  # every text feature was placed on its words
            words = sum(w["weight"] for w in entry["up"] + entry["down"])
            assert parts(entry) + words == pytest.approx(entry["value"], abs=2e-3)
            assert sum(entry["blocks"].values()) + entry["bias"] == pytest.approx(entry["value"], abs=2e-3)
    if "cross" in model.pipeline_[0].named_transformers_:
        assert any(e["labels"][lab]["blocks"]["cross"] != 0 for e in found for lab in model.labels)


def test_svm_explains_the_mean_decision_of_its_calibration_folds():
    model, X = fitted("tfidf_svm", False, use_target=True)
    X = X.head(6)
    found = explain(model, X, top_k=3, labels="decided")
    features = features_of(model, X)
    folds = model.pipeline_[-1].calibrated_classifiers_
    decision = np.mean([fold.estimator.decision_function(features) for fold in folds], axis=0)
    decided = model.predict(X)
    for row, explanation in enumerate(found):
        assert "svm decision" in explanation["space"]
        assert list(explanation["labels"]) == [decided[row]]
        j = model.labels.index(decided[row])
        assert explanation["labels"][decided[row]]["value"] == pytest.approx(decision[row, j], abs=1e-3)


@pytest.mark.parametrize("multilabel", [True, False], ids=["topic", "stance"])
def test_removing_the_top_word_moves_the_score_the_way_the_explanation_says(multilabel):
    model, X = fitted("tfidf_logreg", multilabel, **({} if multilabel else STANCE_PARAMS))
    X = X.head(8)
    checked = 0
    for row, explanation in enumerate(explain(model, X, top_k=1)):
        text = X.loc[row, "text"]
        for label in model.labels:
            entry = explanation["labels"][label]
            for side, sign in (("up", -1), ("down", 1)):
                if not entry[side]:
                    continue
                top = entry[side][0]
                assert text[top["start"] : top["end"]] == top["word"]
                shorter = X.iloc[[row]].assign(text=without(text, top["start"], top["end"]))
                after = explain(model, shorter, top_k=1)[0]["labels"][label]["value"]
                assert np.sign(after - entry["value"]) == sign, (text, label, side, top)
                checked += 1
    assert checked >= len(X) * len(model.labels)


def test_masked_actors_map_back_to_the_words_they_replaced():
    text = "Iranian and Iraqi envoys met in Baghdad."
    target = "closer Iran–Iraq ties"
    first, last = _origin(text, "PARTY and PARTY envoys met in Baghdad.", target)
    assert (first[0], last[4]) == (0, 7)  # PARTY <- "Iranian"
    assert (first[10], last[14]) == (12, 17)  # PARTY <- "Iraqi"
    assert _origin(text, "something else", target) is None


def test_occlusion_weights_are_the_score_drops_and_the_budget_truncates():
    model, X = fitted("tfidf_logreg", True)
    X = X.head(3)
    found = explain_occlusion(model, X, 2, "all", Budget())
    for row, explanation in enumerate(found):
        assert explanation["method"] == "occlusion" and not explanation["truncated"]
        assert explanation["occluded"] == explanation["words"] == len(X.loc[row, "text"].split())
        for j, label in enumerate(model.labels):
            entry = explanation["labels"][label]
            for top in entry["up"] + entry["down"]:
                shorter = X.iloc[[row]].assign(text=without(X.loc[row, "text"], top["start"], top["end"]))
                assert entry["score"] - model.predict_proba(shorter)[0, j] == pytest.approx(top["weight"], abs=1e-3)
    cut = explain_occlusion(model, X, 2, "all", Budget(max_words=3, max_variants=5))
    assert [e["occluded"] for e in cut] == [3, 2, 0]
    assert all(e["truncated"] for e in cut)
    longest = cut[0]["labels"][model.labels[0]]["up"] + cut[0]["labels"][model.labels[0]]["down"]
    assert all(len(w["word"]) >= 6 for w in longest)  # the longest words are tried first


def test_labels_to_explain_are_checked():
    model, X = fitted("tfidf_logreg", False, use_target=True)
    assert list(explain(model, X.head(2), labels=[["favor"], ["against", "neutral"]])[1]["labels"]) == [
        "against",
        "neutral",
    ]
    with pytest.raises(ValueError, match="one list per sentence"):
        explain(model, X.head(2), labels=[["favor"]])
    with pytest.raises(ValueError, match="one list per sentence"):
        explain(model, X.head(1), labels=[["nonsense"]])
    assert model.explain(X.head(1), top_k=1)[0]["labels"].keys() == set(model.labels)
    given = np.full((1, 3), 1 / 3)  # scores the caller has (tagging computed them) are reported as they are
    assert explain(model, X.head(1), scores=given)[0]["labels"]["favor"]["score"] == round(1 / 3, 4)
    with pytest.raises(ValueError, match="one row per sentence"):
        explain(model, X.head(2), scores=given)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["static_logreg", "transformer"])
def test_occlusion_families_explain_with_the_score_drop_of_the_top_word(family, tiny_encoder, tmp_path, monkeypatch):
    """The top word is the one whose removal moves the score most, by its weight, against its sign
    (a tiny untrained transformer moves scores by 1e-4s: compared at that precision)."""
    monkeypatch.setenv("TAGGER_HOME", str(tmp_path))
    model, X = fitted(family, False, name_or_path=tiny_encoder)
    X = X.head(2)
    for row, explanation in enumerate(explain(model, X, top_k=3)):
        assert explanation["method"] == "occlusion" and not explanation["truncated"]
        text = X.loc[row, "text"]
        spans = [m.span() for m in re.finditer(r"\w+", text)]
        variants = X.iloc[[row] * len(spans)].assign(text=[without(text, a, b) for a, b in spans])
        changes = model.predict_proba(variants) - model.predict_proba(X.iloc[[row]])
        for j, label in enumerate(model.labels):
            entry = explanation["labels"][label]
            top = max(entry["up"] + entry["down"], key=lambda w: abs(w["weight"]))
            change = changes[spans.index((top["start"], top["end"])), j]
            assert abs(change) == pytest.approx(np.abs(changes[:, j]).max(), abs=1e-4)
            assert change == pytest.approx(-top["weight"], abs=1e-4)
            assert np.abs(changes[:, j]).max() > 0  # removing words does change the scores


@pytest.mark.slow
def test_tag_endpoint_explains_on_request(server):
    body = {"text": "Iran and Iraq signed a gas supply deal. Militias fired rockets.", "explain": True, "top_k": 3}
    response = httpx.post(server + "/v1/tag", json=body, timeout=30)
    assert response.status_code == 200, response.text
    for sentence in response.json()["sentences"]:
        explanation = sentence["explanation"]
        assert set(explanation["topic"]["labels"]) == set(sentence["topic_scores"])
        assert list(explanation["stance"]["labels"]) == [sentence["stance"]]
        entry = explanation["stance"]["labels"][sentence["stance"]]
        assert entry["score"] == pytest.approx(sentence["stance_scores"][sentence["stance"]], abs=1e-3)
        words = entry["up"] + entry["down"]
        assert 0 < len(words) <= 6
        assert all(sentence["text"][w["start"] : w["end"]] == w["word"] for w in words)
    plain = httpx.post(server + "/v1/tag", json={"text": body["text"]}, timeout=30).json()
    assert "explanation" not in plain["sentences"][0]
    every = httpx.post(server + "/v1/tag", json={**body, "explain_all_classes": True}, timeout=30).json()
    assert len(every["sentences"][0]["explanation"]["stance"]["labels"]) == 3
    assert httpx.post(server + "/v1/tag", json={**body, "top_k": 0}, timeout=30).status_code == 422


@pytest.mark.slow
def test_tag_cli_explains(registry):
    text = "Militias fired rockets at a base near the border."
    rows = [json.loads(line) for line in invoke("tag", text, "--explain", "--top-k", "2", "--json").stdout.splitlines()]
    assert rows and all({"topic", "stance"} <= set(row["explanation"]) for row in rows)
    table = invoke("tag", text, "--explain").stdout
    assert "why" in table and f"{rows[0]['stance']}:" in table
