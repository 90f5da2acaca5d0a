"""The compiled TF-IDF scorer gives exactly the fitted sklearn pipeline's probabilities."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from tests.conftest import SEEDS_FILE, TRAIN_FILE, read_jsonl
from train.models.linear_scoring import LinearHead
from train.models.tfidf import TfidfLogReg, TfidfSvm

TOPICS = ["security", "energy", "trade", "diplomacy"]
STANCES = ["favor", "against", "neutral"]
ROWS = read_jsonl(TRAIN_FILE)[:400]
# seeds are scored, never trained on; plus text with no known token, an empty string and punctuation only
PROBE = pd.DataFrame(
    {
        "text": [r["text"] for r in read_jsonl(SEEDS_FILE)] + ["zzqx vvqq", "", "!!"],
        "target": "closer Iran–Iraq ties",
    }
)


def fitted(family, task: str, **params):
    frame = pd.DataFrame({"text": [r["text"] for r in ROWS], "target": [r["target"] for r in ROWS]})
    if task == "topic":
        return family("multilabel", TOPICS, **params).fit(frame, [r["topics"] for r in ROWS])
    if task == "binary":
        rows = [r["stance"] if r["stance"] == "favor" else "other" for r in ROWS]
        return family("multiclass", ["favor", "other"], **params).fit(frame, rows)
    return family("multiclass", STANCES, **params).fit(frame, [r["stance"] for r in ROWS])


def sklearn_scores(model) -> np.ndarray:
    return model.pipeline_.predict_proba(pd.DataFrame(model._inputs(PROBE)))


@pytest.mark.parametrize("task", ["topic", "stance", "binary"])
@pytest.mark.parametrize(
    "family,params",
    [
        (TfidfLogReg, {}),
        (TfidfLogReg, {"sublinear_tf": False, "char_ngram_range": None, "mask_target_actors": True}),
        (TfidfSvm, {}),
    ],
)
def test_compiled_scores_equal_the_pipeline(family, params, task):
    model = fitted(family, task, **params)
    scores = model.predict_proba(PROBE)
    np.testing.assert_allclose(scores, sklearn_scores(model), rtol=0, atol=1e-12)
    assert scores.shape == (len(PROBE), len(model.labels))
    # logistic regression is scored as one matrix product; the calibrated SVM keeps sklearn's own head
    assert isinstance(model.compiled_.head, LinearHead) == (family is TfidfLogReg)


def test_compiled_scorer_is_rebuilt_after_pickling_and_refitting():
    model = fitted(TfidfLogReg, "topic")
    before = model.predict_proba(PROBE)
    restored = pickle.loads(pickle.dumps(model))
    assert "compiled_" not in restored.__dict__
    np.testing.assert_array_equal(restored.predict_proba(PROBE), before)
    # a refit on other data must not keep scoring with the old compiled weights
    rows = ROWS[200:]
    frame = pd.DataFrame({"text": [r["text"] for r in rows]})
    restored.fit(frame, [r["topics"] for r in rows])
    np.testing.assert_allclose(restored.predict_proba(PROBE), sklearn_scores(restored), rtol=0, atol=1e-12)
    assert not np.allclose(restored.predict_proba(PROBE), before)


def test_models_with_the_same_analysis_share_tokens_and_others_do_not():
    """Topic and stance models analyse the same sentences: the second reuses the tokens, never wrong ones."""
    from train.models.linear_scoring import SHARED_ANALYSIS, CompiledPipeline

    topic = fitted(TfidfLogReg, "topic")
    stance = fitted(TfidfLogReg, "stance")
    other = fitted(TfidfLogReg, "stance", char_ngram_range=[1, 3], lowercase=False)
    for model in (topic, stance, other, topic, other, stance):  # interleaved, as a service calls them
        np.testing.assert_allclose(model.predict_proba(PROBE), sklearn_scores(model), rtol=0, atol=1e-12)
    char = {
        m: next(
            b
            for b in CompiledPipeline.compile(m.pipeline_).features.blocks
            if b.analysis_key and "char_wb" in str(b.analysis_key)
        )
        for m in (topic, stance, other)
    }
    texts = list(PROBE["text"])
    first = SHARED_ANALYSIS.tokens(char[topic].analysis_key, char[topic].analyzer, texts)
    assert SHARED_ANALYSIS.tokens(char[stance].analysis_key, char[stance].analyzer, texts) is first
    assert char[other].analysis_key != char[topic].analysis_key
