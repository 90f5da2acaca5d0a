"""Explanations of single predictions: the words that pushed each label's score up, and down.

Each family gets a strategy, chosen in one place (``EXPLAINERS``, by class name along the MRO):

- ``linear`` (the TF-IDF families): exact. A linear model's value for a label is ``bias + Σ x_j w_j``
  over its TF-IDF features ``x_j``. Each feature's term is shared among its occurrences in the
  sentence, a word n-gram's among its words, a character n-gram's among the words its characters
  overlap (by characters). The target's own block and the crossed-target blocks are totalled
  apart (``blocks``); whatever cannot be placed on a word is ``unattributed``, so
  ``bias + words + target + unattributed == value`` always. Logistic regression: log-odds
  (one-vs-rest topics) or softmax logits (stance). Calibrated SVM: the SVM decision function,
  averaged over the calibration folds' SVMs (each fold's probability is a monotone map of its own).
- ``occlusion`` (every other family): each word is removed in turn and the sentence scored again,
  all variants in one ``predict_proba`` call; a word's weight is the score drop without it (in
  probability). A ``Budget`` caps variants (per sentence and per call) and estimated seconds;
  a sentence whose words were not all tried says ``truncated``.

``explain(model, X, top_k)`` returns, per sentence, ``{"method", "space", "truncated", "labels":
{label: {"score", "value", "up": [...], "down": [...], ...}}}``; ``up``/``down`` hold up to
``top_k`` words ``{"word", "start", "end", "weight"}`` (character offsets into the sentence).
"""

from __future__ import annotations

import re
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from train.domain import target_actors

TextClassifier = Any  # a fitted ``train.models.base.TextClassifier`` (not imported: it imports this module)

TOKEN = re.compile(r"\w+|[^\w\s]")  # what is highlighted: words, and punctuation marks on their own
DECIMALS = 4
CHAR_WB_CACHE = 50_000  # words per block whose char_wb features are kept


@dataclass(frozen=True)
class Budget:
    """Bounds on occlusion: variants per sentence and per call, and estimated model seconds per call."""

    max_words: int = 48
    max_variants: int = 512
    seconds: float = 1.0


def _r(value: float) -> float:
    return round(float(value), DECIMALS)


def tokens(text: str) -> list[tuple[int, int]]:
    """The highlightable tokens of ``text`` as (start, end) offsets: words and punctuation marks."""
    return [m.span() for m in TOKEN.finditer(text)]


def _ranked(text: str, spans: list[tuple[int, int]], weights: np.ndarray, top_k: int) -> dict[str, list[dict]]:
    """The ``top_k`` tokens with the largest positive (``up``) and negative (``down``) weights."""
    order = np.argsort(-weights, kind="stable")
    up = [i for i in order[:top_k] if weights[i] > 0]
    down = [i for i in order[::-1][:top_k] if weights[i] < 0]

    def item(i: int) -> dict:
        start, end = spans[i]
        return {"word": text[start:end], "start": start, "end": end, "weight": _r(weights[i])}

    return {"up": [item(i) for i in up], "down": [item(i) for i in down]}


Labels = str | list[list[str]]  # "all", "decided", or the labels to explain for each sentence


def _chosen(model: TextClassifier, proba_row: np.ndarray, labels: Labels, i: int) -> list[int]:
    """Label columns to explain for sentence ``i``: all, the decided ones (the predicted class; the chosen
    topics), or those ``labels[i]`` names."""
    if labels == "all":
        return list(range(len(model.labels)))
    if labels == "decided":
        decided = model.decide(proba_row[None, :])[0]
        names = decided if model.multilabel else [decided]
    else:
        names = labels[i]
    return [model.labels.index(name) for name in names]


# --- linear models ---------------------------------------------------------------------------------


def _positive_columns(estimator) -> tuple[np.ndarray, np.ndarray] | None:
    """(weights (n_features, k), bias (k,)) of a fitted linear estimator, one column per output."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier, _ConstantPredictor
    from sklearn.svm import LinearSVC

    if isinstance(estimator, LogisticRegression | LinearSVC):
        return np.asarray(estimator.coef_).T, np.asarray(estimator.intercept_, dtype=float)
    if isinstance(estimator, CalibratedClassifierCV):
        parts = [_positive_columns(c.estimator) for c in estimator.calibrated_classifiers_]
        if any(p is None for p in parts):
            return None
        return np.mean([p[0] for p in parts], axis=0), np.mean([p[1] for p in parts], axis=0)
    if isinstance(estimator, OneVsRestClassifier):
        columns = []
        for inner in estimator.estimators_:
            if isinstance(inner, _ConstantPredictor):  # a label never seen positive (or always)
                columns.append(None)
                continue
            part = _positive_columns(inner)
            if part is None or part[0].shape[1] != 1:
                return None
            columns.append(part)
        width = next((c[0].shape[0] for c in columns if c is not None), 0)
        weights = np.column_stack([c[0][:, 0] if c else np.zeros(width) for c in columns])
        bias = np.array([c[1][0] if c else 0.0 for c in columns])
        return weights, bias
    return None


@dataclass
class _Block:
    """One block of the fitted features: where its columns start, and how text maps to them."""

    name: str
    offset: int
    width: int  # columns per slot (crossed blocks: one slot per known target)
    kind: str  # word | char_wb | char | target | opaque
    column: str  # the input it reads (text or target)
    vectorizer: Any = None
    crossing: Any = None
    preprocess: Callable[[str], str] | None = None
    analyzer: Callable[[str], list[str]] | None = None
    token_re: re.Pattern | None = None
    stop_words: frozenset = frozenset()
    cache: dict = field(default_factory=dict, repr=False)


def _block(name: str, offset: int, vectorizer, column: str, crossing=None) -> _Block:
    from sklearn.feature_extraction.text import TfidfVectorizer

    width = len(vectorizer.vocabulary_)
    kind = "opaque"
    if isinstance(vectorizer, TfidfVectorizer) and vectorizer.input == "content" and vectorizer.tokenizer is None:
        kind = vectorizer.analyzer if vectorizer.analyzer in ("word", "char", "char_wb") else "opaque"
    if column == "target":
        kind = "target"
    block = _Block(name, offset, width, kind, column, vectorizer, crossing)
    if kind != "opaque":
        block.preprocess = vectorizer.build_preprocessor()
        block.analyzer = vectorizer.build_analyzer()
        block.token_re = re.compile(vectorizer.token_pattern) if vectorizer.token_pattern else None
        block.stop_words = frozenset(vectorizer.get_stop_words() or ())
        if kind == "word" and (block.token_re is None or block.token_re.groups > 1):
            block.kind = "opaque"
    return block


class LinearExplainer:
    """Reads a fitted TF-IDF pipeline once: its blocks, and the weights as (features × outputs)."""

    def __init__(self, model: TextClassifier):
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.multiclass import OneVsRestClassifier

        from train.models.target_cross import TargetCrossedWords

        pipeline = model.pipeline_
        classifier = pipeline[-1]
        columns = _positive_columns(classifier)
        if columns is None:
            raise TypeError(f"no linear weights in {type(classifier).__name__}")
        weights, bias = columns
        if not model.multilabel and weights.shape[1] == 1 and len(model.labels) == 2:  # binary: [-w, w]
            weights, bias = np.column_stack([-weights[:, 0], weights[:, 0]]), np.array([-bias[0], bias[0]])
        if weights.shape[1] != len(model.labels):
            raise TypeError(f"{weights.shape[1]} weight columns for {len(model.labels)} labels")
        inner = classifier.estimators_[0] if isinstance(classifier, OneVsRestClassifier) else classifier
        if isinstance(inner, CalibratedClassifierCV):
            self.space = "svm decision (mean of the calibration folds' SVMs; probability is calibrated from it)"
        elif model.multilabel:
            self.space = "log-odds"
        else:
            self.space = "logit (softmax over the classes)"
        head = model.compiled_.head
        if head is not None and head.weights.shape == weights.shape:  # the fast scorer's: no second copy
            weights = head.weights
        self.weights, self.bias = weights, bias.astype(float)
        self.blocks: list[_Block] = []
        offset = 0
        for name, vectorizer, column in pipeline[0].transformers_:
            if name == "remainder" and vectorizer == "drop":
                continue
            if isinstance(vectorizer, TargetCrossedWords):
                block = _block(name, offset, vectorizer.vectorizer_, "text", crossing=vectorizer)
                offset += block.width * max(len(vectorizer.targets_), 1)
            else:
                block = _block(name, offset, vectorizer, column if isinstance(column, str) else "opaque")
                offset += block.width
            self.blocks.append(block)
        if offset != self.weights.shape[0]:
            raise TypeError(f"{offset} feature columns but {self.weights.shape[0]} weights")
        self.starts = np.array([b.offset for b in self.blocks])
        self.link = model.compiled_.head.link if model.compiled_.head is not None else "calibrated"
        if self.link == "binary":  # [1 - p, p] of the weights' one column: the sigmoid of [-z, z]
            self.link = "sigmoid"
        # TF-IDF rows computed here (faster than the sparse matrices) when every block can be read
        self.fast = all(
            b.kind != "opaque" and b.vectorizer.norm in ("l2", None) and not b.vectorizer.binary for b in self.blocks
        )
        self._target_rows: dict[str, tuple] = {}

    def _occurrences(self, block: _Block, text: str, target: str, out: list, names: dict) -> bool:
        """Add the block's n-grams in ``text`` to ``out`` as (feature id, start, end, share), offsets in
        ``text``; False when the block's n-grams could not all be found (the model's own row is used)."""
        if block.kind == "target":
            return True
        if block.kind == "opaque":
            return False
        base = block.offset
        if block.crossing is not None:
            slot = block.crossing.targets_.get(target, -1)
            if slot < 0:
                return True  # a target without a block of its own: the crossed block is empty
            base += slot * block.width
        analysed = block.preprocess(text)
        if len(analysed) != len(text):  # case folding changed lengths: offsets would not line up
            return False
        vocabulary = block.vectorizer.vocabulary_
        if block.kind == "char_wb":
            lo, hi = block.vectorizer.ngram_range
            for m in re.finditer(r"\S+", analysed):
                word = m.group()
                found = block.cache.get(word)
                if found is None:
                    if len(block.cache) >= CHAR_WB_CACHE:
                        block.cache.clear()
                    found = block.cache[word] = _char_wb_hits(word, lo, hi, vocabulary)
                start = m.start()
                for j, a, b, gram in found:
                    out.append((base + j, start + a, start + b, 1.0))
                    names[base + j] = gram
        elif block.kind == "char":
            lo, hi = block.vectorizer.ngram_range
            normal, where = _collapse_spaces(analysed)
            for n in range(lo, hi + 1):
                for i in range(len(normal) - n + 1):
                    j = vocabulary.get(normal[i : i + n])
                    if j is not None:
                        out.append((base + j, where[i], where[i + n - 1] + 1, 1.0))
                        names[base + j] = normal[i : i + n]
        else:  # word n-grams: each of the n words gets a share of 1/n
            group = 1 if block.token_re.groups == 1 else 0
            found = [(m.span(group), m.group(group)) for m in block.token_re.finditer(analysed)]
            found = [f for f in found if f[1] not in block.stop_words]
            lo, hi = block.vectorizer.ngram_range
            for n in range(lo, hi + 1):
                for i in range(len(found) - n + 1):
                    gram = found[i][1] if n == 1 else " ".join(t[1] for t in found[i : i + n])
                    j = vocabulary.get(gram)
                    if j is None:
                        continue
                    names[base + j] = gram
                    out.extend((base + j, span[0], span[1], 1.0 / n) for span, _ in found[i : i + n])
        return True

    def _target_names(self, target: str, names: dict) -> None:
        for block in self.blocks:
            if block.kind == "target":
                for gram in block.analyzer(target):
                    j = block.vectorizer.vocabulary_.get(gram)
                    if j is not None:
                        names[block.offset + j] = gram

    def explain(self, model, X: pd.DataFrame, top_k: int, labels: Labels, scores: np.ndarray | None) -> list[dict]:
        """The exact contributions; TF-IDF values are computed here from the n-grams found (as each
        vectorizer does), or taken from the model's own features where the text could not be read."""
        inputs = model._inputs(X)
        compiled = model.compiled_
        features = None  # the model's feature rows, computed only if needed
        results = []
        for i, (original, analysed, target) in enumerate(
            zip(map(str, X["text"].tolist()), inputs["text"], inputs["target"], strict=True)
        ):
            occurrences: list = []
            names: dict[int, str] = {}
            complete = [self._occurrences(block, analysed, target, occurrences, names) for block in self.blocks]
            row = self._row(occurrences, target, names) if self.fast and all(complete) else None
            if row is None:
                if features is None:
                    features = compiled.features.transform(inputs)
                sparse = features[i]
                order = np.argsort(sparse.indices, kind="stable")
                row = sparse.indices[order].astype(np.int64), sparse.data[order]
                self._target_names(target, names)
            score = scores[i] if scores is not None else None
            results.append(
                self._one(model, original, analysed, target, *row, occurrences, names, top_k, labels, i, score)
            )
        return results

    def _row(self, occurrences: list, target: str, names: dict) -> tuple[np.ndarray, np.ndarray] | None:
        """The sentence's TF-IDF row (sorted ids, values), as the fitted vectorizers compute it: counts,
        sublinear tf, idf and an l2 norm per block."""
        ids, values = [], []
        if occurrences:
            fid = np.fromiter((o[0] for o in occurrences), dtype=np.int64, count=len(occurrences))
            share = np.fromiter((o[3] for o in occurrences), dtype=float, count=len(occurrences))
            unique, inverse = np.unique(fid, return_inverse=True)
            counts = np.rint(np.bincount(inverse, weights=share))  # a word n-gram's n shares of 1/n make 1
            block_of = np.searchsorted(self.starts, unique, side="right") - 1
            for b in np.unique(block_of):
                mine = block_of == b
                block = self.blocks[b]
                local = (unique[mine] - block.offset) % block.width
                ids.append(unique[mine])
                values.append(self._tfidf(block, local, counts[mine]))
        cached = self._target_rows.get(target)
        if cached is None:
            cached = self._target_rows[target] = self._target_row(target)
            if len(self._target_rows) > CHAR_WB_CACHE:
                self._target_rows.clear()
        ids.append(cached[0])
        values.append(cached[1])
        names.update(cached[2])
        indices, data = np.concatenate(ids), np.concatenate(values)
        order = np.argsort(indices, kind="stable")
        return indices[order], data[order]

    @staticmethod
    def _tfidf(block: _Block, local: np.ndarray, counts: np.ndarray) -> np.ndarray:
        vectorizer = block.vectorizer
        values = 1.0 + np.log(counts) if vectorizer.sublinear_tf else counts.astype(float)
        if vectorizer.use_idf:
            values = values * vectorizer.idf_[local]
        if vectorizer.norm == "l2":
            values = values / np.sqrt(np.sum(values**2))
        return values

    def _target_row(self, target: str) -> tuple[np.ndarray, np.ndarray, dict]:
        """The target blocks' part of the row (the same for every sentence with this target), and names."""
        ids, values, names = [], [], {}
        for block in self.blocks:
            if block.kind != "target":
                continue
            found = []
            for gram in block.analyzer(target):
                j = block.vectorizer.vocabulary_.get(gram)
                if j is not None:
                    found.append(j)
                    names[block.offset + j] = gram
            if found:
                local, counts = np.unique(np.array(found, dtype=np.int64), return_counts=True)
                ids.append(local + block.offset)
                values.append(self._tfidf(block, local, counts.astype(float)))
        if not ids:
            return np.zeros(0, np.int64), np.zeros(0), names
        return np.concatenate(ids), np.concatenate(values), names

    def _proba(self, model, values: np.ndarray, indices: np.ndarray, data: np.ndarray) -> np.ndarray:
        """The model's scores: the logistic link of ``values``, or the calibrated classifier's own."""
        from scipy.special import expit, softmax

        if self.link == "softmax":
            return softmax(values)
        if self.link == "sigmoid":
            return expit(values)
        import scipy.sparse as sp

        width = self.weights.shape[0]
        row = sp.csr_matrix((data, indices, np.array([0, len(indices)])), shape=(1, width))
        return model.compiled_.classifier.predict_proba(row)[0]

    def _one(self, model, text, analysed, target, indices, data, occurrences, names, top_k, labels, i, score) -> dict:
        contrib = data[:, None] * self.weights[indices]  # (nnz, outputs)
        values = self.bias + contrib.sum(axis=0)
        proba_row = self._proba(model, values, indices, data) if score is None else score
        chosen = _chosen(model, proba_row, labels, i)
        block_of = np.searchsorted(self.starts, indices, side="right") - 1
        block_totals = np.zeros((len(self.blocks), contrib.shape[1]))
        np.add.at(block_totals, block_of, contrib)

        spans = tokens(text)
        token_weights = np.zeros((len(spans), contrib.shape[1]))
        origin = _origin(text, analysed, target)
        if origin is not None and spans and occurrences:
            token_weights = self._spread(occurrences, indices, contrib, origin, text, spans)
        target_total = sum(block_totals[b] for b, blk in enumerate(self.blocks) if blk.kind == "target")
        target_total = target_total if isinstance(target_total, np.ndarray) else np.zeros(contrib.shape[1])
        unattributed = values - self.bias - target_total - token_weights.sum(axis=0)

        out = {}
        for j in chosen:
            top = np.argsort(-np.abs(contrib[:, j]), kind="stable")[:top_k]
            out[model.labels[j]] = {
                "score": _r(proba_row[j]),
                "value": _r(values[j]),
                "bias": _r(self.bias[j]),
                "blocks": {blk.name: _r(block_totals[b, j]) for b, blk in enumerate(self.blocks)},
                "unattributed": _r(unattributed[j]),
                **_ranked(text, spans, token_weights[:, j], top_k),
                "features": [
                    {
                        "feature": names.get(int(indices[f]), f"#{int(indices[f] - self.blocks[block_of[f]].offset)}"),
                        "block": self.blocks[block_of[f]].name,
                        "weight": _r(contrib[f, j]),
                    }
                    for f in top
                    if contrib[f, j] != 0
                ],
            }
        return {"method": "linear", "space": self.space, "truncated": False, "labels": out}

    @staticmethod
    def _spread(occurrences, indices, contrib, origin, text, spans) -> np.ndarray:
        """Each feature's contribution, shared among its occurrences, onto the tokens they overlap."""
        fid, start, end, share = (np.asarray(c) for c in zip(*occurrences, strict=True))
        fid = fid.astype(np.int64)
        start, end = start.astype(np.int64), end.astype(np.int64)
        position = np.searchsorted(indices, fid)
        position = np.minimum(position, len(indices) - 1)
        present = indices[position] == fid if len(indices) else np.zeros(len(fid), bool)
        fid, start, end, share, position = fid[present], start[present], end[present], share[present], position[present]
        if not len(fid):
            return np.zeros((len(spans), contrib.shape[1]))
        totals = np.bincount(position, weights=share, minlength=len(indices))
        entry = contrib[position] * (share / totals[position])[:, None]  # (entries, outputs)
        first, last = origin
        start, end = first[start], last[end - 1]  # in the original sentence's characters
        token_at = np.full(len(text), -1, dtype=np.int64)
        for k, (a, b) in enumerate(spans):
            token_at[a:b] = k
        lengths = np.maximum(end - start, 0)
        owner = np.repeat(np.arange(len(fid)), lengths)
        chars = np.repeat(start - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths) + np.arange(lengths.sum())
        hit = token_at[chars]
        keep = hit >= 0
        owner, hit = owner[keep], hit[keep]
        covered = np.bincount(owner, minlength=len(fid))
        part = 1.0 / covered[owner]
        weights = np.zeros((len(spans), contrib.shape[1]))
        for j in range(contrib.shape[1]):
            weights[:, j] = np.bincount(hit, weights=entry[owner, j] * part, minlength=len(spans))
        return weights


def _char_wb_hits(word: str, lo: int, hi: int, vocabulary) -> list[tuple[int, int, int, str]]:
    """``char_wb`` n-grams of one word found in ``vocabulary``: (id, start, end, gram), offsets in the word."""
    padded = f" {word} "
    hits = []
    for n in range(lo, hi + 1):
        if len(padded) <= n:  # a word shorter than n counts once, whole
            j = vocabulary.get(padded)
            if j is not None:
                hits.append((j, 0, len(word), padded))
            break
        for i in range(len(padded) - n + 1):
            gram = padded[i : i + n]
            j = vocabulary.get(gram)
            if j is not None:
                a, b = max(i - 1, 0), min(i + n - 1, len(word))
                if b > a:
                    hits.append((j, a, b, gram))
    return hits


def _collapse_spaces(text: str) -> tuple[str, list[int]]:
    """``text`` with runs of whitespace made one space (as sklearn's ``char`` analyzer does), and each
    character's position in ``text``."""
    parts, where, last = [], [], 0
    for m in re.finditer(r"\s\s+", text):
        parts.append(text[last : m.start()])
        where.extend(range(last, m.start()))
        parts.append(" ")
        where.append(m.start())
        last = m.end()
    parts.append(text[last:])
    where.extend(range(last, len(text)))
    return "".join(parts), where


def _origin(text: str, analysed: str, target: str) -> tuple[np.ndarray, np.ndarray] | None:
    """For each character of ``analysed`` (the text the features read), its span in ``text``.

    The same text: itself. Actors masked (``mask_actors``): "PARTY" spans the word it replaced.
    None when neither explains the difference.
    """
    if analysed == text:
        positions = np.arange(len(text))
        return positions, positions + 1
    spans = [(i, i + 1) for i in range(len(text))]
    current = text
    for actor in sorted(target_actors(target), key=len, reverse=True):
        stem = actor if len(actor) <= 4 else actor[: len(actor) - 1]
        pieces, new_spans, last = [], [], 0
        for m in re.finditer(rf"\b{re.escape(stem)}\w*", current):
            pieces.append(current[last : m.start()])
            new_spans.extend(spans[last : m.start()])
            replaced = (spans[m.start()][0], spans[m.end() - 1][1])
            pieces.append("PARTY")
            new_spans.extend([replaced] * 5)
            last = m.end()
        pieces.append(current[last:])
        new_spans.extend(spans[last:])
        current, spans = "".join(pieces), new_spans
    if current != analysed:
        return None
    first = np.array([s[0] for s in spans], dtype=np.int64)
    return first, np.array([s[1] for s in spans], dtype=np.int64)


_LINEAR: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def explain_linear(
    model: TextClassifier, X: pd.DataFrame, top_k: int, labels: Labels, budget: Budget, scores: np.ndarray | None = None
) -> list[dict]:
    """Exact contributions of a TF-IDF + linear model; occlusion when its pipeline cannot be read."""
    cached = _LINEAR.get(model)
    if cached is None or cached[0] is not model.pipeline_:
        try:
            explainer = LinearExplainer(model) if model.compiled_ is not None else None
        except TypeError:
            explainer = None
        cached = _LINEAR[model] = (model.pipeline_, explainer)
    if cached[1] is None:
        return explain_occlusion(model, X, top_k, labels, budget)
    return cached[1].explain(model, X, top_k, labels, scores)


# --- occlusion -------------------------------------------------------------------------------------

_SPEED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> seconds per scored sentence


def without(text: str, start: int, end: int) -> str:
    """``text`` with ``text[start:end]`` removed, and the spaces around it made one."""
    left, right = text[:start].rstrip(), text[end:].lstrip()
    return f"{left} {right}" if left and right else left + right


def explain_occlusion(
    model: TextClassifier, X: pd.DataFrame, top_k: int, labels: Labels, budget: Budget, scores: np.ndarray | None = None
) -> list[dict]:
    """Score drops when each word is removed, all variants scored in one ``predict_proba`` call (``scores``
    is not used: the sentence is scored again in the same call as its variants)."""
    texts = X["text"].astype(str).tolist()
    allowed = budget.max_variants
    speed = _SPEED.get(model)
    if speed:
        allowed = min(allowed, int(budget.seconds / speed) - len(texts))
    plans = []
    for text in texts:
        spans = tokens(text)
        words = word_tokens(text, spans)
        take = max(min(len(words), budget.max_words, allowed), 0)
        truncated = take < len(words)
        if truncated:  # the longest words first: short ones are mostly function words
            words = sorted(sorted(words, key=lambda k: spans[k][0] - spans[k][1])[:take])
        allowed -= take
        plans.append((spans, words, truncated))
    variants = [without(text, *spans[k]) for text, (spans, words, _) in zip(texts, plans, strict=True) for k in words]
    rows = np.concatenate([np.arange(len(texts)), np.repeat(np.arange(len(texts)), [len(p[1]) for p in plans])])
    frame = X.iloc[rows].reset_index(drop=True).copy()
    frame["text"] = texts + variants
    began = time.perf_counter()
    proba = model.predict_proba(frame)
    per_row = (time.perf_counter() - began) / len(frame)
    _SPEED[model] = per_row if speed is None else 0.7 * speed + 0.3 * per_row
    results, at = [], len(texts)
    for i, (text, (spans, words, truncated)) in enumerate(zip(texts, plans, strict=True)):
        drops = proba[i] - proba[at : at + len(words)]  # (words, labels): what each word added
        at += len(words)
        weights = np.zeros((len(spans), proba.shape[1]))
        weights[words] = drops
        out = {}
        for j in _chosen(model, proba[i], labels, i):
            ranked = _ranked(text, spans, weights[:, j], top_k)
            out[model.labels[j]] = {"score": _r(proba[i, j]), "value": _r(proba[i, j]), **ranked}
        results.append(
            {
                "method": "occlusion",
                "space": "probability (score drop when the word is removed)",
                "truncated": truncated,
                "words": len(word_tokens(text, spans)),
                "occluded": len(words),
                "labels": out,
            }
        )
    return results


def word_tokens(text: str, spans: list[tuple[int, int]]) -> list[int]:
    """Indexes of the tokens that are words (not punctuation)."""
    return [k for k, (a, _) in enumerate(spans) if re.match(r"\w", text[a])]


# --- the strategies, per family ------------------------------------------------------------------

Explainer = Callable[[TextClassifier, pd.DataFrame, int, Labels, Budget, np.ndarray | None], list[dict]]
EXPLAINERS: dict[str, Explainer] = {"TfidfClassifier": explain_linear}  # class name (any in the MRO) -> strategy


def register_explainer(class_name: str, explainer: Explainer) -> None:
    """Use ``explainer`` for ``class_name`` and its subclasses (plug-in families); occlusion otherwise."""
    EXPLAINERS[class_name] = explainer


def explainer_for(model: TextClassifier) -> Explainer:
    for cls in type(model).__mro__:
        if cls.__name__ in EXPLAINERS:
            return EXPLAINERS[cls.__name__]
    return explain_occlusion


def explain(
    model: TextClassifier,
    X: pd.DataFrame | Sequence[str],
    top_k: int = 5,
    labels: Labels = "all",
    budget: Budget | None = None,
    scores: np.ndarray | None = None,
) -> list[dict]:
    """Per sentence of ``X``, for each label (``labels="all"``), the decided ones (``"decided"``) or those
    named per sentence (a list of label lists), the ``top_k`` words that pushed the score up and down, with
    signed weights (see the module docstring). ``scores``: the model's scores of ``X`` where the caller has
    them (tagging did), reported as each label's ``score`` instead of being computed again."""
    X = X if isinstance(X, pd.DataFrame) else pd.DataFrame({"text": list(X)})
    if not isinstance(X.index, pd.RangeIndex) or X.index.start != 0 or X.index.step != 1:
        X = X.reset_index(drop=True)
    if isinstance(labels, str):
        if labels not in ("all", "decided"):
            raise ValueError(f"labels must be 'all', 'decided' or a list per sentence, not {labels!r}")
    elif len(labels) != len(X) or any(name not in model.labels for names in labels for name in names):
        raise ValueError(f"labels: one list per sentence ({len(X)}), of labels among {model.labels}")
    if top_k < 1:
        raise ValueError("top_k must be at least 1")
    if not len(X):
        return []
    if scores is not None and np.shape(scores) != (len(X), len(model.labels)):
        raise ValueError(f"scores: one row per sentence and one column per label, not {np.shape(scores)}")
    return explainer_for(model)(model, X, top_k, labels, budget or Budget(), scores)
