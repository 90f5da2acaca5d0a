"""What every model family shares: plain data in and out, label handling, per-label thresholds.

``X`` is a pandas DataFrame with a ``text`` column and, for stance, a ``target`` column (a list
of strings is accepted for text-only tasks). ``y`` is a list of label lists (multi-label) or a list
of labels (multi-class). ``predict_proba`` returns an array with one column per label, in
``self.labels`` order.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel
from sklearn.preprocessing import MultiLabelBinarizer

from train.domain import target_actors
from train.models.decision import apply_offsets, best_offsets, best_thresholds
from train.models.params import FamilyParams


def as_frame(X: pd.DataFrame | Sequence[str]) -> pd.DataFrame:
    """Accept a DataFrame with ``text`` (and optional ``target``) or a plain list of texts."""
    if isinstance(X, pd.DataFrame):
        if "text" not in X.columns:
            raise ValueError("input needs a 'text' column")
        return X
    return pd.DataFrame({"text": list(X)})


def mask_actors(text: str, target: str, token: str = "PARTY") -> str:
    """Replace mentions of the target's actors (and simple derived forms) with ``token``.

    "Iran" also masks "Iranian", "Russia" masks "Russian": a stance model then learns how the
    pair is talked about, not which pair it is, and carries over to pairs it never saw.
    """
    for stem, pattern in actor_patterns(target):
        if stem in text:  # the pattern cannot match otherwise (a substring test is cheaper than a search)
            text = pattern.sub(token, text)
    return text


@lru_cache(maxsize=4096)
def actor_patterns(target: str) -> tuple[tuple[str, re.Pattern], ...]:
    """Each stem :func:`mask_actors` masks for ``target`` and its pattern, longest actor first (compiled once)."""
    stems = [a if len(a) <= 4 else a[: len(a) - 1] for a in sorted(target_actors(target), key=len, reverse=True)]
    return tuple((stem, re.compile(rf"\b{re.escape(stem)}\w*")) for stem in stems)


class TextClassifier:
    """Base for families: subclasses implement ``_fit`` and ``_scores``.

    Constructor arguments are the config: ``task_type``, ``labels``, ``seed`` and the family's
    params, validated by its ``Params`` model and kept as ``params`` (``get_params`` returns them).
    """

    Params: type[BaseModel] = FamilyParams  # a family's settings; built-in families get theirs from their spec

    requirements: tuple[str, ...] = ()  # extra pip packages a logged model needs
    backends: tuple[str, ...] = ("sklearn",)  # inference backends ``set_backend`` accepts
    supports_sample_weight: bool = False  # ``_fit`` takes ``sample_weight`` (per-corpus ``data.weights``)

    def __init__(self, task_type: str, labels: list[str], seed: int = 13, **params):
        self.task_type = task_type
        self.labels = list(labels)
        self.seed = seed
        self.params: dict = self.Params(**params).model_dump()

    def get_params(self, deep: bool = True) -> dict:
        return {"task_type": self.task_type, "labels": self.labels, "seed": self.seed, **self.params}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.task_type}, labels={self.labels})"

    # --- persistence ----------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        """Write everything needed to predict into ``folder``: ``family.json`` and the weights (no pickle)."""
        from train.models.persistence import save_classifier

        save_classifier(self, Path(folder))

    @staticmethod
    def load(folder: Path) -> TextClassifier:
        """The classifier saved in ``folder`` (``train.models.persistence``: data only, never unpickled)."""
        from train.models.persistence import load_classifier

        return load_classifier(Path(folder))

    def learned_state(self) -> dict:
        """Small learned values kept in the manifest: by default every attribute ending in ``_`` except the
        decision (saved on its own). Families with weights return only what ``_save_weights`` does not write."""
        from train.models.persistence import DECISION

        return {k: v for k, v in vars(self).items() if k.endswith("_") and k not in DECISION}

    def restore_state(self, state: dict) -> None:
        """Set the values ``learned_state`` returned when the model was saved."""
        for key, value in state.items():
            setattr(self, key, value)

    def _save_weights(self, folder: Path) -> None:
        """Write the learned weights into ``folder`` in a native format (skops, safetensors, npz)."""

    def _load_weights(self, folder: Path) -> None:
        """Read back what ``_save_weights`` wrote (after params, decision and ``restore_state``)."""

    def model_info(self) -> dict[str, float]:
        """Size figures logged as metrics (parameter count, size on disk)."""
        return {}

    def set_backend(self, backend: str, force: bool = False) -> str:
        """Choose the inference backend and return it; only families with several backends accept another.

        ``auto`` picks the fastest backend that held parity with the reference backend (the first in
        ``backends``) when the model was trained. A backend measured below
        ``parity.MIN_AGREEMENT`` is refused (``ValueError``) unless ``force``.
        """
        from train.models import parity

        reference = self.backends[0]
        measured = self.parity_
        if backend == parity.AUTO:
            backend = parity.choose(getattr(self, "backend", reference), reference, measured)
        if backend not in self.backends:
            raise ValueError(f"{type(self).__name__} has no '{backend}' backend (it has: {', '.join(self.backends)})")
        figures = measured.get(backend)
        if figures and backend != reference and figures["agreement"] < parity.MIN_AGREEMENT and not force:
            raise ValueError(parity.refusal(backend, reference, figures))
        return backend

    def measure_parity(self, X) -> dict[str, dict[str, float]]:
        """Each backend against the reference backend on ``X``: agreement, score differences, speed.

        Kept as ``parity_`` (saved with the model) and returned; families with one backend have none.
        """
        from train.models import parity

        if len(self.backends) < 2:
            return {}
        X = as_frame(X)
        current = getattr(self, "backend", self.backends[0])
        results, reference_scores = {}, None
        try:
            for backend in self.backends:
                self.set_backend(backend, force=True)
                self.predict_proba(X.head(8))  # warm-up: sessions are built on first use
                scores, speed = parity.timed(lambda: self.predict_proba(X), len(X))
                if reference_scores is None:  # the reference backend comes first
                    reference_scores = scores
                figures = parity.compare_scores(reference_scores, scores, self.decide)
                results[backend] = {**figures, "sentences_per_second": speed, "sentences": float(len(X))}
        finally:
            self.set_backend(current, force=True)
        self.parity_ = results
        return results

    # --- subclass hooks -------------------------------------------------------------------
    def check_data(self, X: pd.DataFrame, Y: np.ndarray) -> None:
        """Raise ``ValueError`` (naming the param) when this family cannot fit ``X``/``Y`` as configured.

        Called before a run is created, so a setting that only the data can refute (``min_df``
        above the corpus size, more calibration folds than examples) never leaves a failed run.
        """

    def _fit(self, X: pd.DataFrame, Y: np.ndarray, X_dev: pd.DataFrame | None, Y_dev: np.ndarray | None):
        raise NotImplementedError

    def _scores(self, X: pd.DataFrame) -> np.ndarray:
        raise NotImplementedError

    # --- public API -----------------------------------------------------------------------
    @property
    def multilabel(self) -> bool:
        return self.task_type == "multilabel"

    def encode(self, y: Sequence) -> np.ndarray:
        """Labels → indicator matrix (multi-label) or class indices (multi-class)."""
        if self.multilabel:
            return MultiLabelBinarizer(classes=self.labels).fit_transform(y)
        index = {label: i for i, label in enumerate(self.labels)}
        return np.array([index[label] for label in y])

    def fit(self, X, y, X_dev=None, y_dev=None, sample_weight=None) -> TextClassifier:
        """Fit on ``X``/``y`` (dev data for early stopping where a family uses it); ``sample_weight``
        (one positive number per sentence) only for families with ``supports_sample_weight``."""
        X = as_frame(X)
        Y = self.encode(y)
        X_dev = as_frame(X_dev) if X_dev is not None else None
        Y_dev = self.encode(y_dev) if y_dev is not None else None
        if sample_weight is None:
            self._fit(X, Y, X_dev, Y_dev)
        elif not self.supports_sample_weight:
            raise ValueError(f"{type(self).__name__} cannot weight sentences (sample_weight)")
        else:
            self._fit(X, Y, X_dev, Y_dev, sample_weight=np.asarray(sample_weight, dtype=float))
        self.thresholds_ = np.full(len(self.labels), 0.5)
        self.offsets_ = np.zeros(len(self.labels))
        self.priors_ = None  # set with the tuned decision (set_decision)
        self.parity_ = {}  # set by measure_parity
        return self

    def predict_proba(self, X) -> np.ndarray:
        return np.asarray(self._scores(as_frame(X)), dtype=float)

    def decide(self, proba: np.ndarray) -> list:
        """Scores → labels: per-label thresholds (multi-label) or arg-max of log-score + class offset (multi-class)."""
        if self.multilabel:
            chosen = np.asarray(proba >= self.thresholds_)
            if chosen.shape[1] > 16:
                return [[lab for lab, keep in zip(self.labels, row, strict=True) if keep] for row in chosen]
            # each row's label set as a bit pattern: the list of each pattern is built once, copied per row
            codes = chosen.astype(np.int64) @ (1 << np.arange(chosen.shape[1], dtype=np.int64))
            sets = {c: [lab for j, lab in enumerate(self.labels) if c >> j & 1] for c in np.unique(codes).tolist()}
            return [sets[c].copy() for c in codes.tolist()]
        return [self.labels[i] for i in apply_offsets(proba, self.offsets_)]

    def predict(self, X) -> list:
        return self.decide(self.predict_proba(X))

    def explain(self, X, top_k: int = 5, labels: str | list[list[str]] = "all", budget=None) -> list[dict]:
        """Per sentence and label, the words that pushed the score up and down (``train.models.explain``)."""
        from train.models.explain import explain

        return explain(self, X, top_k, labels, budget)

    def tune_decision(self, X_dev, y_dev, objective: str = "f1_macro") -> None:
        """Tune the decision on dev: per-label thresholds for F1 (multi-label), class offsets for ``objective``."""
        self.set_decision(self.predict_proba(X_dev), self.encode(y_dev), objective)

    def set_decision(self, proba: np.ndarray, Y: np.ndarray, objective: str = "f1_macro", tune: bool = True) -> None:
        """Tune the decision on held-out scores ``proba`` with gold ``Y`` (indicators or class indices).

        Also keeps ``priors_``, the mean held-out score: the label priors the scores assume, which
        prior-shift correction starts from.
        """
        self.priors_ = proba.mean(axis=0)
        if not tune:
            return
        if self.multilabel:
            self.thresholds_ = best_thresholds(proba, Y)
        else:
            self.offsets_ = best_offsets(proba, Y, self.labels, objective)

    def adjust_priors(self, proba: np.ndarray) -> tuple[dict[str, tuple[float, float]], np.ndarray]:
        """Scores adjusted to the label priors of this batch (EM, ``prior_shift``); {label: (tuned, batch)}."""
        from train.models.prior_shift import adjust_priors

        train_priors = self.priors_
        if train_priors is None:
            raise ValueError("the model stores no label priors (its decision was never tuned on held-out scores)")
        batch, adjusted = adjust_priors(proba, train_priors, self.multilabel)
        report = {label: (float(t), float(b)) for label, t, b in zip(self.labels, train_priors, batch, strict=True)}
        return report, adjusted

    def decision_info(self) -> dict[str, dict[str, float]]:
        """The tuned decision, for run tags and summaries: thresholds (multi-label) or class offsets."""
        if self.multilabel:
            return {"thresholds": dict(zip(self.labels, map(float, self.thresholds_), strict=True))}
        return {"class_offsets": dict(zip(self.labels, map(float, self.offsets_), strict=True))}
