"""Fast scoring of fitted TF-IDF + linear pipelines: tokens → one sparse row → one matrix product.

sklearn's ``Pipeline``, ``ColumnTransformer`` and ``OneVsRestClassifier`` check and convert their input
on every call: about 5 ms per model for one sentence, fifty times the arithmetic. A service scores
a few sentences at a time, so a fitted pipeline is read once into what prediction needs (each
vectorizer's analyzer, vocabulary and idf; one stacked weight matrix) and scored with plain
numpy/scipy. The fitted estimators stay the model: this reads their public fitted attributes, and
tests check the scores equal ``pipeline.predict_proba``. Pipelines it does not understand (e.g. a
calibrated SVM head) keep the fast features and use the classifier's own ``predict_proba``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.special import expit, softmax
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import Pipeline

ANALYSIS_SETTINGS = (
    "input", "encoding", "decode_error", "strip_accents", "lowercase", "preprocessor",
    "tokenizer", "stop_words", "token_pattern", "ngram_range", "analyzer",
)  # fmt: skip


class SharedAnalysis:
    """Tokens of the latest batch, per analyzer setting.

    The topic and the stance model analyse the same sentences with the same settings (character
    2–5-grams dominate the cost), so the second model reuses the first one's tokens. Only the most
    recent batch is kept per setting, so memory stays bounded by one batch.
    """

    def __init__(self):
        self._latest: dict[tuple, tuple[tuple[str, ...], list[list[str]]]] = {}

    @staticmethod
    def key(vectorizer: TfidfVectorizer) -> tuple | None:
        """What determines the tokens; None for custom callables, whose output may differ per instance."""
        params = vectorizer.get_params()
        if any(callable(params[name]) for name in ("analyzer", "preprocessor", "tokenizer")):
            return None
        return tuple((name, repr(params[name])) for name in ANALYSIS_SETTINGS)

    def tokens(self, key: tuple | None, analyzer: Callable[[str], list[str]], texts: Sequence[str]) -> list[list[str]]:
        texts = tuple(texts)
        latest = self._latest.get(key) if key is not None else None
        if latest is not None and latest[0] == texts:
            return latest[1]
        tokens = [analyzer(text) for text in texts]
        if key is not None:
            self._latest[key] = (texts, tokens)  # one assignment: a concurrent reader sees old or new, whole
        return tokens


SHARED_ANALYSIS = SharedAnalysis()


@dataclass
class TfidfBlock:
    """One fitted ``TfidfVectorizer`` applied to one input column."""

    column: str
    analyzer: Callable[[str], list[str]]
    vocabulary: Mapping[str, int]
    idf: np.ndarray | None
    sublinear_tf: bool
    l2_norm: bool
    analysis_key: tuple | None = None

    @classmethod
    def from_vectorizer(cls, column: str, vectorizer: TfidfVectorizer) -> TfidfBlock | None:
        if vectorizer.binary or vectorizer.norm not in ("l2", None):
            return None
        return cls(
            column=column,
            analyzer=vectorizer.build_analyzer(),
            vocabulary=vectorizer.vocabulary_,
            idf=vectorizer.idf_ if vectorizer.use_idf else None,
            sublinear_tf=vectorizer.sublinear_tf,
            l2_norm=vectorizer.norm == "l2",
            analysis_key=SharedAnalysis.key(vectorizer),
        )

    @property
    def width(self) -> int:
        return len(self.vocabulary)

    def transform(self, texts: Sequence[str]) -> sp.csr_matrix:
        """The TF-IDF rows of ``texts``, as ``TfidfVectorizer.transform`` computes them."""
        lookup = self.vocabulary.get
        indices: list[int] = []
        indptr = [0]
        for tokens in SHARED_ANALYSIS.tokens(self.analysis_key, self.analyzer, texts):
            indices.extend(i for i in map(lookup, tokens) if i is not None)
            indptr.append(len(indices))
        X = sp.csr_matrix(
            (np.ones(len(indices)), np.asarray(indices, dtype=np.int64), np.asarray(indptr, dtype=np.int64)),
            shape=(len(texts), self.width),
        )
        X.sum_duplicates()  # token counts
        if self.sublinear_tf:
            np.log(X.data, out=X.data)
            X.data += 1.0
        if self.idf is not None:
            X.data *= self.idf[X.indices]
        if self.l2_norm:
            rows = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))
            norms = np.sqrt(np.bincount(rows, weights=X.data**2, minlength=X.shape[0]))
            X.data /= norms[rows]
        return X


class CompiledFeatures:
    """The fitted ``ColumnTransformer`` of TF-IDF blocks, as a function of plain columns of strings."""

    def __init__(self, blocks: list[TfidfBlock]):
        self.blocks = blocks

    @classmethod
    def from_column_transformer(cls, features: ColumnTransformer) -> CompiledFeatures | None:
        blocks = []
        for name, vectorizer, column in features.transformers_:
            if name == "remainder" and vectorizer == "drop":
                continue
            if not isinstance(vectorizer, TfidfVectorizer) or not isinstance(column, str):
                return None
            block = TfidfBlock.from_vectorizer(column, vectorizer)
            if block is None:
                return None
            blocks.append(block)
        return cls(blocks)

    def transform(self, columns: Mapping[str, Sequence[str]]) -> sp.csr_matrix:
        return sp.hstack([block.transform(columns[block.column]) for block in self.blocks], format="csr")


@dataclass
class LinearHead:
    """``X @ weights + intercept`` then the link of the fitted logistic regression(s)."""

    weights: np.ndarray  # (n_features, n_outputs)
    intercept: np.ndarray  # (n_outputs,)
    link: str  # "sigmoid": one probability per output; "binary": [1 - p, p]; "softmax": over outputs

    @classmethod
    def from_classifier(cls, classifier) -> LinearHead | None:
        if isinstance(classifier, OneVsRestClassifier) and all(
            isinstance(e, LogisticRegression) and len(e.classes_) == 2 for e in classifier.estimators_
        ):
            weights = np.vstack([e.coef_ for e in classifier.estimators_]).T
            intercept = np.concatenate([e.intercept_ for e in classifier.estimators_])
            return cls(weights, intercept, "sigmoid")
        if isinstance(classifier, LogisticRegression):
            link = "binary" if len(classifier.classes_) == 2 else "softmax"
            return cls(classifier.coef_.T, classifier.intercept_, link)  # views: no second copy of the weights
        return None

    def predict_proba(self, X: sp.csr_matrix) -> np.ndarray:
        decision = np.asarray(X @ self.weights) + self.intercept
        if self.link == "sigmoid":
            return expit(decision)
        if self.link == "binary":
            positive = expit(decision[:, 0])
            return np.column_stack([1.0 - positive, positive])
        return softmax(decision, axis=1)


class CompiledPipeline:
    """Scores like ``Pipeline([("features", ColumnTransformer), ("classifier", ...)]).predict_proba``."""

    def __init__(self, features: CompiledFeatures, head: LinearHead | None, classifier):
        self.features = features
        self.head = head
        self.classifier = classifier

    @classmethod
    def compile(cls, pipeline: Pipeline) -> CompiledPipeline | None:
        """None when the pipeline's features are not all TF-IDF vectorizers on named columns."""
        features = CompiledFeatures.from_column_transformer(pipeline[0])
        if features is None:
            return None
        classifier = pipeline[-1]
        return cls(features, LinearHead.from_classifier(classifier), classifier)

    def predict_proba(self, columns: Mapping[str, Sequence[str]]) -> np.ndarray:
        X = self.features.transform(columns)
        if self.head is not None:
            return self.head.predict_proba(X)
        return self.classifier.predict_proba(X)
