"""TF-IDF features added for SemEval-2016: ``char_analyzer: char`` and ``cross_target_char``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from test_linear_scoring import PROBE, ROWS, STANCES, sklearn_scores
from test_target_cross import T1, T2

from train.models.linear_scoring import CrossedBlock
from train.models.params import TfidfParams
from train.models.tfidf import TfidfLogReg

FILLER = "officials analysts ministry report week capital region council city province statement".split()


def stem_meanings(n: int, seed: int) -> tuple[pd.DataFrame, list[str]]:
    """A cue word is new in every sentence (``portzone4711``) but shares its stem with the others of its kind;
    one stem means favor toward one target and against toward the other, a third stem is neutral.

    No cue word repeats, so the crossed word block has no copy of it (``cross_target_min_df``): only the
    crossed character n-grams (the stem) can tell the two targets' meanings apart.
    """
    rng = np.random.default_rng(seed)
    texts, targets, labels = [], [], []
    for i in range(n):
        target = (T1, T2)[i % 2]
        kind = rng.integers(3)
        stem, label = [
            ("portzone", "favor" if target == T1 else "against"),
            ("borderwall", "against" if target == T1 else "favor"),
            ("weathernote", "neutral"),
        ][kind]
        words = list(rng.choice(FILLER, 4))
        texts.append(" ".join([*words[:2], f"{stem}{seed}{i:04d}", *words[2:]]))
        targets.append(target)
        labels.append(label)
    return pd.DataFrame({"text": texts, "target": targets}), labels


def test_crossed_char_ngrams_learn_what_a_stem_means_for_each_target():
    X, y = stem_meanings(300, seed=0)
    X_test, y_test = stem_meanings(200, seed=1)
    params = {"char_ngram_range": (3, 5), "cross_target": True, "cross_target_min_sentences": 20}
    words_only = TfidfLogReg("multiclass", STANCES, **params).fit(X, y)
    with_chars = TfidfLogReg("multiclass", STANCES, cross_target_char=True, **params).fit(X, y)
    accuracy = lambda model: np.mean(np.array(model.predict(X_test)) == np.array(y_test))  # noqa: E731
    assert accuracy(words_only) < 0.75  # the shared char weights cannot flip a stem's meaning
    assert accuracy(with_chars) > 0.95
    assert "cross_char" not in words_only.pipeline_[0].named_transformers_
    assert with_chars.pipeline_[0].named_transformers_["cross_char"].vectorizer_.analyzer == "char_wb"


def test_char_analyzer_reads_across_spaces_and_defaults_to_char_wb():
    frame = pd.DataFrame({"text": ["#hillary for president", "#atheism is fine"], "target": [T1, T2]})
    labels = ["favor", "against"]
    default = TfidfLogReg("multiclass", STANCES, char_ngram_range=(3, 3)).fit(frame, labels)
    spanning = TfidfLogReg("multiclass", STANCES, char_ngram_range=(3, 3), char_analyzer="char").fit(frame, labels)
    vocabulary = lambda model: set(model.pipeline_[0].named_transformers_["char"].vocabulary_)  # noqa: E731
    assert "y f" in vocabulary(spanning) and "y f" not in vocabulary(default)  # "hillar|y f|or": across the space
    assert " #h" in vocabulary(default)  # char_wb pads each word with spaces


def test_compiled_scores_equal_the_pipeline_with_char_and_crossed_chars():
    frame = pd.DataFrame({"text": [r["text"] for r in ROWS], "target": [r["target"] for r in ROWS]})
    model = TfidfLogReg(
        "multiclass",
        STANCES,
        char_analyzer="char",
        cross_target=True,
        cross_target_char=True,
        cross_target_min_sentences=20,
    ).fit(frame, [r["stance"] for r in ROWS])
    crossed = [b for b in model.compiled_.features.blocks if isinstance(b, CrossedBlock)]
    assert [b.crossing.analyzer for b in crossed] == ["word", "char"]
    known = pd.DataFrame({"text": PROBE["text"], "target": [ROWS[i % len(ROWS)]["target"] for i in range(len(PROBE))]})
    for probe in (PROBE, known):  # an unseen target and targets seen in training
        np.testing.assert_allclose(
            model.predict_proba(probe), model.pipeline_.predict_proba(pd.DataFrame(model._inputs(probe))), atol=1e-12
        )
    np.testing.assert_allclose(model.predict_proba(PROBE), sklearn_scores(model), atol=1e-12)


def test_params_refuse_an_unknown_char_analyzer_and_keep_old_defaults():
    with pytest.raises(ValidationError, match="char_analyzer"):
        TfidfParams(char_analyzer="word")
    defaults = TfidfParams()
    assert defaults.char_analyzer == "char_wb" and defaults.cross_target_char is False
