"""TF-IDF families: word and character n-grams with logistic regression or a linear SVM.

Multi-label tasks use one-vs-rest binary classifiers; thresholds are tuned per label on dev by
the pipeline. For stance the target is part of the input: its own TF-IDF block, and (optionally)
the target's actors masked in the text so the model learns how a pair is talked about, not which
pair it is.
"""

from __future__ import annotations

from functools import cached_property
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import Pipeline
from sklearn.svm import LinearSVC

from train.models.base import TextClassifier, mask_actors
from train.models.linear_scoring import CompiledPipeline
from train.registry import model_families


class TfidfParams(BaseModel):
    """Settings shared by the TF-IDF families."""

    model_config = ConfigDict(extra="forbid")

    word_ngram_range: tuple[int, int] = (1, 2)
    char_ngram_range: tuple[int, int] | None = (2, 5)
    min_df: int = Field(1, ge=1)
    max_features: int | None = Field(None, ge=1)
    sublinear_tf: bool = True
    lowercase: bool = True
    use_target: bool = True
    mask_target_actors: bool = False
    C: float = Field(4.0, gt=0)
    class_weight: Literal["balanced"] | None = "balanced"


class TfidfClassifier(TextClassifier):
    """TF-IDF features + a linear classifier; the classifier is chosen by the subclass."""

    Params = TfidfParams

    def __init__(self, task_type: str, labels: list[str], seed: int = 13, **params):
        super().__init__(task_type, labels, seed)
        self.params = self.Params(**params).model_dump()

    def _inputs(self, X: pd.DataFrame) -> dict[str, list[str]]:
        """The columns the features read: ``text`` (actors masked if asked) and ``target`` ("" if none)."""
        texts = [str(t) for t in X["text"]]
        has_target = "target" in X.columns and X["target"].notna().any()
        targets = [str(t) for t in X["target"].fillna("")] if has_target else [""] * len(texts)
        if self.params["mask_target_actors"] and has_target:
            texts = [mask_actors(t, g) for t, g in zip(texts, targets, strict=True)]
        return {"text": texts, "target": targets}

    def _features(self) -> ColumnTransformer:
        p = self.params
        blocks = [
            (
                "word",
                TfidfVectorizer(
                    ngram_range=tuple(p["word_ngram_range"]),
                    min_df=p["min_df"],
                    max_features=p["max_features"],
                    sublinear_tf=p["sublinear_tf"],
                    lowercase=p["lowercase"],
                ),
                "text",
            )
        ]
        if p["char_ngram_range"]:
            blocks.append(
                (
                    "char",
                    TfidfVectorizer(
                        analyzer="char_wb",
                        ngram_range=tuple(p["char_ngram_range"]),
                        min_df=p["min_df"],
                        max_features=p["max_features"],
                        sublinear_tf=p["sublinear_tf"],
                        lowercase=p["lowercase"],
                    ),
                    "text",
                )
            )
        if p["use_target"] and not self.multilabel:
            blocks.append(("target", TfidfVectorizer(lowercase=True), "target"))
        return ColumnTransformer(blocks)

    def _classifier(self):
        raise NotImplementedError

    def _fit(self, X, Y, X_dev, Y_dev) -> None:
        inputs = pd.DataFrame(self._inputs(X))
        if self.params["use_target"] and not self.multilabel and not any(t.strip() for t in inputs["target"]):
            # no targets in the data: drop the empty target block rather than fail on an empty vocabulary
            self.params = {**self.params, "use_target": False}
        classifier = self._classifier()
        if self.multilabel:
            classifier = OneVsRestClassifier(classifier)
        self.pipeline_ = Pipeline([("features", self._features()), ("classifier", classifier)])
        self.pipeline_.fit(inputs, Y)
        self.__dict__.pop("compiled_", None)

    @cached_property
    def compiled_(self) -> CompiledPipeline | None:
        """The fitted pipeline as a fast scorer (None if it cannot be); built on first use, never saved."""
        return CompiledPipeline.compile(self.pipeline_)

    def _scores(self, X: pd.DataFrame) -> np.ndarray:
        if self.compiled_ is None:
            return self.pipeline_.predict_proba(pd.DataFrame(self._inputs(X)))
        return self.compiled_.predict_proba(self._inputs(X))

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "compiled_"}


@model_families.register("tfidf_logreg")
class TfidfLogReg(TfidfClassifier):
    """TF-IDF + logistic regression (probabilities are the model's own)."""

    def _classifier(self):
        return LogisticRegression(
            C=self.params["C"], class_weight=self.params["class_weight"], max_iter=2000, random_state=self.seed
        )


class TfidfSvmParams(TfidfParams):
    C: float = Field(0.5, gt=0)
    calibration: Literal["sigmoid", "isotonic"] = "sigmoid"
    calibration_folds: int = Field(3, ge=2)


@model_families.register("tfidf_svm")
class TfidfSvm(TfidfClassifier):
    """TF-IDF + linear SVM, with probabilities calibrated by cross-validation."""

    Params = TfidfSvmParams

    def _classifier(self):
        svm = LinearSVC(C=self.params["C"], class_weight=self.params["class_weight"], random_state=self.seed)
        return CalibratedClassifierCV(svm, method=self.params["calibration"], cv=self.params["calibration_folds"])
