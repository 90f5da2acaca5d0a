"""The compiled TF-IDF scorer gives exactly the fitted sklearn pipeline's probabilities."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.conftest import SEEDS_FILE, TRAIN_FILE, read_jsonl
from train.models.base import TextClassifier
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


def test_compiled_scorer_is_rebuilt_after_saving_and_refitting(tmp_path):
    model = fitted(TfidfLogReg, "topic", char_ngram_range=None)  # word n-grams: a small file, quick to save
    before = model.predict_proba(PROBE)
    model.save(tmp_path / "model")
    restored = TextClassifier.load(tmp_path / "model")
    assert "compiled_" not in restored.__dict__
    np.testing.assert_array_equal(restored.predict_proba(PROBE), before)
    # a refit on other data must not keep scoring with the old compiled weights
    rows = ROWS[200:]
    frame = pd.DataFrame({"text": [r["text"] for r in rows]})
    restored.fit(frame, [r["topics"] for r in rows])
    np.testing.assert_allclose(restored.predict_proba(PROBE), sklearn_scores(restored), rtol=0, atol=1e-12)
    assert not np.allclose(restored.predict_proba(PROBE), before)


def test_compiled_analyzers_give_the_same_scores_warm_and_across_models():
    """word and char_wb blocks are compiled, char ones are not; warm, interleaved and masked, scores stay sklearn's."""
    topic = fitted(TfidfLogReg, "topic")
    stance = fitted(TfidfLogReg, "stance", mask_target_actors=True)
    other = fitted(TfidfLogReg, "stance", char_ngram_range=[1, 3], lowercase=False)
    spanning = fitted(TfidfLogReg, "topic", char_analyzer="char")  # n-grams across spaces: the Python analyzer
    for model in (topic, stance, other, spanning, topic, other, stance):  # interleaved, as a service calls them
        np.testing.assert_allclose(model.predict_proba(PROBE), sklearn_scores(model), rtol=0, atol=1e-12)
    assert all(block.native is not None for block in topic.compiled_.features.blocks)
    word, char = spanning.compiled_.features.blocks
    assert word.native is not None and char.native is None


@pytest.mark.parametrize("ngram_range", [(2, 5), (1, 3), (3, 3)])
@pytest.mark.parametrize("options", [{}, {"lowercase": False}, {"strip_accents": "unicode"}])
def test_cached_char_wb_analyzer_equals_sklearns(ngram_range, options):
    from sklearn.feature_extraction.text import TfidfVectorizer

    from train.models.linear_scoring import CharWbAnalyzer

    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=ngram_range, **options)
    texts = [r["text"] for r in ROWS[:200]] + list(PROBE["text"]) + ["a I  é\tCafé\n\nx", "Ünïcode — “quotes” 5%"]
    reference, cached = vectorizer.build_analyzer(), CharWbAnalyzer(vectorizer)
    for _ in range(2):  # cold, then from the word cache
        assert [cached(t) for t in texts] == [reference(t) for t in texts]


def test_actor_masks_compiled_once_mask_as_the_plain_substitutions_do():
    import re

    from train.domain import target_actors
    from train.models.base import mask_actors

    def reference(text: str, target: str) -> str:
        for actor in sorted(target_actors(target), key=len, reverse=True):
            stem = actor if len(actor) <= 4 else actor[: len(actor) - 1]
            text = re.sub(rf"\b{re.escape(stem)}\w*", "PARTY", text)
        return text

    assert mask_actors("Iranian and Iraqi envoys met in Iran.", "closer Iran–Iraq ties") == (
        "PARTY and PARTY envoys met in PARTY."
    )
    rows = [(r["text"], r["target"]) for r in ROWS] + [("Russians in Russia", "closer Russia–China ties")]
    assert [mask_actors(t, g) for t, g in rows] == [reference(t, g) for t, g in rows]
    assert sum(mask_actors(t, g) != t for t, g in rows) > 50  # the rows do name their actors
