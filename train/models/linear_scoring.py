"""Fast scoring of fitted TF-IDF + linear pipelines: tokens → one sparse row → one matrix product.

sklearn's ``Pipeline``, ``ColumnTransformer`` and ``OneVsRestClassifier`` check and convert their input
on every call: about 5 ms per model for one sentence, fifty times the arithmetic. A service scores
a few sentences at a time, so a fitted pipeline is read once into what prediction needs (each
vectorizer's analyzer, vocabulary and idf; one stacked weight matrix) and scored with plain
numpy/scipy. The ``word`` and ``char_wb`` analyzers are compiled (:mod:`train.models.ngrams`): one pass
over the batch's code points, the n-grams looked up in a table built from the vocabulary. The fitted
estimators stay the model: this reads their public fitted attributes, and tests check the scores equal
``pipeline.predict_proba``. Pipelines it does not understand (e.g. a calibrated SVM head) keep the fast
features and use the classifier's own ``predict_proba``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
from scipy.special import expit, softmax
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import Pipeline

from train.models.target_cross import TargetCrossedWords

if TYPE_CHECKING:
    from train.models.ngrams import NgramAnalyzer

WORD_CACHE_SIZE = 50_000  # words per char_wb block; the cache starts over when full


def word_char_ngrams(word: str, min_n: int, max_n: int) -> tuple[str, ...]:
    """The ``char_wb`` n-grams of one word, padded with spaces, as sklearn lists them."""
    padded = f" {word} "
    grams: list[str] = []
    for n in range(min_n, max_n + 1):
        if len(padded) <= n:  # a word shorter than n counts once, whole
            grams.append(padded)
            break
        grams.extend(padded[i : i + n] for i in range(len(padded) - n + 1))
    return tuple(grams)


class CharWbAnalyzer:
    """``TfidfVectorizer(analyzer="char_wb")``'s analyzer, word by word.

    ``char_wb`` n-grams never cross a word boundary, so a block can keep each word's feature ids
    (news reuses its words) instead of cutting and looking up the same n-grams again. Tests check it
    returns what the vectorizer's own analyzer does.
    """

    def __init__(self, vectorizer: TfidfVectorizer):
        self.preprocess = vectorizer.build_preprocessor()
        self.min_n, self.max_n = vectorizer.ngram_range

    def words(self, text: str) -> list[str]:
        return self.preprocess(text).split()

    def __call__(self, text: str) -> list[str]:
        min_n, max_n = self.min_n, self.max_n
        return [gram for word in self.words(text) for gram in word_char_ngrams(word, min_n, max_n)]


def build_analyzer(vectorizer: TfidfVectorizer) -> Callable[[str], list[str]]:
    """A word-by-word analyzer for ``char_wb`` on text input; the vectorizer's own for anything else."""
    if vectorizer.analyzer == "char_wb" and vectorizer.input == "content":
        return CharWbAnalyzer(vectorizer)
    return vectorizer.build_analyzer()


@dataclass
class TfidfBlock:
    """One fitted ``TfidfVectorizer`` applied to one input column."""

    column: str
    analyzer: Callable[[str], list[str]]
    vocabulary: Mapping[str, int]
    idf: np.ndarray | None
    sublinear_tf: bool
    l2_norm: bool
    native: NgramAnalyzer | None = field(default=None, repr=False)  # the compiled analyzer, where there is one
    word_ids: dict[str, list[int]] = field(default_factory=dict, repr=False)  # char_wb: a word's feature ids
    packed: dict = field(default_factory=dict, repr=False)  # idf beside the head's weights, per weights array

    @classmethod
    def from_vectorizer(cls, column: str, vectorizer: TfidfVectorizer, native: bool = True) -> TfidfBlock | None:
        """None for a vectorizer this cannot score; ``native=False`` keeps the Python analyzer."""
        if vectorizer.binary or vectorizer.norm not in ("l2", None):
            return None
        from train.models.ngrams import NgramAnalyzer  # numba: imported when a TF-IDF model is first scored

        return cls(
            native=NgramAnalyzer.from_vectorizer(vectorizer) if native else None,
            column=column,
            analyzer=build_analyzer(vectorizer),
            vocabulary=vectorizer.vocabulary_,
            idf=vectorizer.idf_ if vectorizer.use_idf else None,
            sublinear_tf=vectorizer.sublinear_tf,
            l2_norm=vectorizer.norm == "l2",
        )

    @property
    def width(self) -> int:
        return len(self.vocabulary)

    def ids(self, tokens: Iterable[str]) -> list[int]:
        """Feature ids of the tokens in the vocabulary."""
        return [i for i in map(self.vocabulary.get, tokens) if i is not None]

    def text_ids(self, text: str) -> list[int]:
        analyzer = self.analyzer
        if not isinstance(analyzer, CharWbAnalyzer):
            return self.ids(analyzer(text))
        cache, out = self.word_ids, []
        for word in analyzer.words(text):
            ids = cache.get(word)
            if ids is None:
                if len(cache) >= WORD_CACHE_SIZE:
                    cache.clear()
                ids = cache[word] = self.ids(word_char_ngrams(word, analyzer.min_n, analyzer.max_n))
            out.extend(ids)
        return out

    def transform_columns(self, columns: Mapping[str, Sequence[str]]) -> sp.csr_matrix:
        return self.transform(columns[self.column])

    def counts(self, texts: Sequence[str]) -> sp.csr_matrix:
        """Each text's n-gram counts (``CountVectorizer.transform``'s values)."""
        if self.native is not None:
            indptr, indices, counts = self.native.counts(texts)
            return sp.csr_matrix((counts, indices, indptr), shape=(len(texts), self.width))
        ids: list[int] = []
        bounds = [0]
        for text in texts:
            ids.extend(self.text_ids(text))
            bounds.append(len(ids))
        X = sp.csr_matrix(
            (np.ones(len(ids)), np.asarray(ids, dtype=np.int64), np.asarray(bounds, dtype=np.int64)),
            shape=(len(texts), self.width),
        )
        X.sum_duplicates()
        return X

    def add_products(
        self, texts: Sequence[str], weights: np.ndarray, decision: np.ndarray, row_offsets: np.ndarray | None = None
    ) -> None:
        """``decision += transform(texts) @ weights`` (rows moved by ``row_offsets``, as crossing does)."""
        if self.native is None:
            if row_offsets is not None:
                raise ValueError("row offsets need the compiled analyzer")
            decision += self.transform(texts) @ weights
            return
        from train.models.ngrams import add_tfidf_products, pack_weights

        key = (weights.__array_interface__["data"][0], weights.shape, weights.strides)  # the head's rows
        packed = self.packed.get(key)
        if packed is None:
            packed = self.packed[key] = pack_weights(self.idf, weights, self.width)
        counts = self.native.counts(texts)
        add_tfidf_products(counts, self.sublinear_tf, self.l2_norm, packed, decision, row_offsets)

    def add_products_columns(self, columns: Mapping[str, Sequence[str]], weights: np.ndarray, decision) -> None:
        self.add_products(columns[self.column], weights, decision)

    def transform(self, texts: Sequence[str]) -> sp.csr_matrix:
        """The TF-IDF rows of ``texts``, as ``TfidfVectorizer.transform`` computes them."""
        from train.models.ngrams import tfidf_rows

        X = self.counts(texts)
        tfidf_rows(X, self.idf, self.sublinear_tf, self.l2_norm)
        return X


@dataclass
class CrossedBlock:
    """A fitted ``TargetCrossedWords``: its word block, then each row moved into its target's block."""

    words: TfidfBlock
    crossing: TargetCrossedWords

    def transform_columns(self, columns: Mapping[str, Sequence[str]]) -> sp.csr_matrix:
        return self.crossing.cross(self.words.transform(columns["text"]), [str(t) for t in columns["target"]])

    @property
    def width(self) -> int:
        return self.words.width * max(len(self.crossing.targets_), 1)

    def add_products_columns(self, columns: Mapping[str, Sequence[str]], weights: np.ndarray, decision) -> None:
        """Each row's word features against its target's rows of ``weights`` (none for an unknown target)."""
        if self.words.native is None:
            decision += self.transform_columns(columns) @ weights
            return
        slots = np.array([self.crossing.targets_.get(str(t), -1) for t in columns["target"]], dtype=np.int64)
        offsets = np.where(slots >= 0, slots * self.words.width, -1)
        self.words.add_products(columns["text"], weights, decision, offsets)


class CompiledFeatures:
    """The fitted ``ColumnTransformer`` of TF-IDF blocks, as a function of plain columns of strings."""

    def __init__(self, blocks: list[TfidfBlock | CrossedBlock]):
        self.blocks = blocks

    @classmethod
    def from_column_transformer(cls, features: ColumnTransformer) -> CompiledFeatures | None:
        blocks = []
        for name, vectorizer, column in features.transformers_:
            if name == "remainder" and vectorizer == "drop":
                continue
            if isinstance(vectorizer, TargetCrossedWords) and list(column) == ["text", "target"]:
                words = TfidfBlock.from_vectorizer("text", vectorizer.vectorizer_)
                if words is None:
                    return None
                blocks.append(CrossedBlock(words, vectorizer))
                continue
            if not isinstance(vectorizer, TfidfVectorizer) or not isinstance(column, str):
                return None
            block = TfidfBlock.from_vectorizer(column, vectorizer)
            if block is None:
                return None
            blocks.append(block)
        return cls(blocks)

    def transform(self, columns: Mapping[str, Sequence[str]]) -> sp.csr_matrix:
        return sp.hstack([block.transform_columns(columns) for block in self.blocks], format="csr")


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
            weights = np.ascontiguousarray(np.vstack([e.coef_ for e in classifier.estimators_]).T)
            intercept = np.concatenate([e.intercept_ for e in classifier.estimators_])
            return cls(weights, intercept, "sigmoid")
        if isinstance(classifier, LogisticRegression):
            link = "binary" if len(classifier.classes_) == 2 else "softmax"
            # row-major, as scipy's sparse product reads it (it would copy the transposed view on each call)
            return cls(np.ascontiguousarray(classifier.coef_.T), classifier.intercept_, link)
        return None

    def predict_proba(self, X: sp.csr_matrix) -> np.ndarray:
        return self.link_scores(np.asarray(X @ self.weights) + self.intercept)

    def link_scores(self, decision: np.ndarray) -> np.ndarray:
        """Probabilities from the decision values ``X @ weights + intercept``."""
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
        if self.head is None:
            return self.classifier.predict_proba(self.features.transform(columns))
        # block by block against its rows of the weights: no feature matrix is built
        decision = np.zeros((len(columns["text"]), self.head.weights.shape[1]))
        offset = 0
        for block in self.features.blocks:
            block.add_products_columns(columns, self.head.weights[offset : offset + block.width], decision)
            offset += block.width
        return self.head.link_scores(decision + self.head.intercept)
