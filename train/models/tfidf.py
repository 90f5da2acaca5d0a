"""TF-IDF families: word and character n-grams with logistic regression or a linear SVM.

Multi-label tasks use one-vs-rest binary classifiers; thresholds are tuned per label on dev by
the pipeline. For stance the target is part of the input: its own TF-IDF block, optionally the word
n-grams crossed with the target (``cross_target``: target-specific weights beside shared ones), and
optionally the target's actors masked in the text so the model learns how a pair is talked about,
not which pair it is.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import Pipeline
from sklearn.svm import LinearSVC
from sklearn.utils.class_weight import compute_class_weight

from train.models.base import TextClassifier, mask_actors
from train.models.catalog import TFIDF_LOGREG, TFIDF_SVM
from train.models.linear_scoring import CompiledPipeline
from train.models.persistence import dump_sklearn, load_sklearn
from train.models.target_cross import TargetCrossedWords
from train.models.weighting import fit_weighted
from train.registry import register_family


def strings(column: pd.Series) -> list[str]:
    """The column as a list of ``str`` (one conversion for the column, not one per row, when it holds strings)."""
    values = column.tolist()
    return values if all(type(v) is str for v in values) else [str(v) for v in values]


class TfidfClassifier(TextClassifier):
    """TF-IDF features + a linear classifier; the classifier is chosen by the subclass."""

    def _inputs(self, X: pd.DataFrame) -> dict[str, list[str]]:
        """The columns the features read: ``text`` (actors masked if asked) and ``target`` ("" if none)."""
        texts = strings(X["text"])
        has_target = "target" in X.columns and X["target"].notna().any()
        targets = strings(X["target"].fillna("")) if has_target else [""] * len(texts)
        if self.params["mask_target_actors"] and has_target:
            texts = [mask_actors(t, g) for t, g in zip(texts, targets, strict=True)]
        return {"text": texts, "target": targets}

    def _features(self, use_target: bool) -> ColumnTransformer:
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
                        analyzer=p["char_analyzer"],
                        ngram_range=tuple(p["char_ngram_range"]),
                        min_df=p["min_df"],
                        max_features=p["max_features"],
                        sublinear_tf=p["sublinear_tf"],
                        lowercase=p["lowercase"],
                    ),
                    "text",
                )
            )
        if use_target:
            blocks.append(("target", TfidfVectorizer(lowercase=True), "target"))
        if use_target and p["cross_target"]:

            def crossed(ngram_range, analyzer: str = "word") -> TargetCrossedWords:
                return TargetCrossedWords(
                    ngram_range=tuple(ngram_range),
                    min_df=p["cross_target_min_df"],
                    sublinear_tf=p["sublinear_tf"],
                    lowercase=p["lowercase"],
                    min_sentences=p["cross_target_min_sentences"],
                    analyzer=analyzer,
                )

            blocks.append(("cross", crossed(p["word_ngram_range"]), ["text", "target"]))
            if p["char_ngram_range"] and p["cross_target_char"]:
                crossing = crossed(p["char_ngram_range"], p["char_analyzer"])
                blocks.append(("cross_char", crossing, ["text", "target"]))
        return ColumnTransformer(blocks)

    def _classifier(self):
        raise NotImplementedError

    supports_sample_weight = True

    def _class_weights(self, Y: np.ndarray, sample_weight: np.ndarray | None) -> np.ndarray | None:
        """Per-sentence weights the family itself adds (e.g. class balance), or None."""
        return None

    def check_data(self, X: pd.DataFrame, Y: np.ndarray) -> None:
        """``min_df`` cannot exceed the number of training sentences (no term would remain)."""
        if self.params["min_df"] > len(X):
            raise ValueError(f"model.params.min_df is {self.params['min_df']} but training has only {len(X)} sentences")

    def _fit(self, X, Y, X_dev, Y_dev, sample_weight: np.ndarray | None = None) -> None:
        inputs = pd.DataFrame(self._inputs(X))
        # no targets in the data: no target block (an empty vocabulary would fail); params stay as given
        self.use_target_ = (
            self.params["use_target"] and not self.multilabel and any(t.strip() for t in inputs["target"])
        )
        classifier = self._classifier()
        if self.multilabel:
            classifier = OneVsRestClassifier(classifier)
        self.pipeline_ = Pipeline([("features", self._features(self.use_target_)), ("classifier", classifier)])
        balance = self._class_weights(Y, sample_weight)
        if balance is not None:
            sample_weight = balance if sample_weight is None else balance * sample_weight
        fit_weighted(self.pipeline_, inputs, Y, sample_weight)
        self.__dict__.pop("compiled_", None)

    @cached_property
    def compiled_(self) -> CompiledPipeline | None:
        """The fitted pipeline as a fast scorer (None if it cannot be); built on first use, never saved."""
        return CompiledPipeline.compile(self.pipeline_)

    def _scores(self, X: pd.DataFrame) -> np.ndarray:
        if self.compiled_ is None:
            return self.pipeline_.predict_proba(pd.DataFrame(self._inputs(X)))
        return self.compiled_.predict_proba(self._inputs(X))

    def learned_state(self) -> dict:
        return {"use_target_": bool(self.use_target_)}

    def _save_weights(self, folder: Path) -> None:
        dump_sklearn(self.pipeline_, folder / "pipeline.skops")

    def _load_weights(self, folder: Path) -> None:
        self.pipeline_ = load_sklearn(folder / "pipeline.skops")
        self.__dict__.pop("compiled_", None)


@register_family(TFIDF_LOGREG)
class TfidfLogReg(TfidfClassifier):
    """TF-IDF + logistic regression (probabilities are the model's own)."""

    def _classifier(self):
        return LogisticRegression(
            C=self.params["C"], class_weight=self.params["class_weight"], max_iter=2000, random_state=self.seed
        )


@register_family(TFIDF_SVM)
class TfidfSvm(TfidfClassifier):
    """TF-IDF + linear SVM, with probabilities calibrated by cross-validation."""

    def check_data(self, X: pd.DataFrame, Y: np.ndarray) -> None:
        """Calibration's cross-validation needs ``calibration_folds`` examples of each class."""
        super().check_data(X, Y)
        folds = self.params["calibration_folds"]
        columns = Y.T if self.multilabel else [Y == j for j in range(len(self.labels))]
        for label, column in zip(self.labels, columns, strict=True):
            positives = int(np.sum(column))
            if self.multilabel and positives == 0:
                continue  # a label absent from training gets a constant score, no calibration
            fewest = min(positives, len(column) - positives) if self.multilabel else positives
            if fewest < folds:
                raise ValueError(
                    f"model.params.calibration_folds is {folds} but label '{label}' has only {fewest} "
                    "training sentences on one side; lower calibration_folds or add data"
                )

    def _balanced_by_weights(self) -> bool:
        """Multi-class with ``class_weight: balanced``: balance by sample weights, which calibration honours too.

        A class weight inside the SVM alone is lost in calibration: the sigmoid (or isotonic) map is
        fitted on unweighted folds and re-learns the skewed priors, so a rare class collapses.
        """
        return not self.multilabel and self.params["class_weight"] == "balanced"

    def _classifier(self):
        class_weight = None if self._balanced_by_weights() else self.params["class_weight"]
        svm = LinearSVC(C=self.params["C"], class_weight=class_weight, random_state=self.seed)
        return CalibratedClassifierCV(svm, method=self.params["calibration"], cv=self.params["calibration_folds"])

    def _class_weights(self, Y: np.ndarray, sample_weight: np.ndarray | None) -> np.ndarray | None:
        """Balanced on the weighted class totals, as logistic regression's ``class_weight`` is."""
        if not self._balanced_by_weights():
            return None
        classes = np.unique(Y)
        weights = compute_class_weight("balanced", classes=classes, y=Y, sample_weight=sample_weight)
        return weights[np.searchsorted(classes, Y)]
