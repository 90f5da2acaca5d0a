"""Drift of the live label mix: a sliding window of the scores of served sentences, per task.

Each task keeps the scores of its last ``window`` sentences (and none older than ``max_age`` seconds).
A background thread re-estimates the window's label priors with the EM of ``train.models.prior_shift``
(no labels needed) and compares them with the priors the model was tuned with (``priors_``, its mean
held-out score). The request path only appends scores to a ring buffer.

The divergence is a total-variation distance:

- stance (multi-class): ``½ Σ |π_window − π_training|`` over the classes, the largest change in the
  probability of any set of classes;
- topics (multi-label, each label a Bernoulli prior): the largest ``|π_window − π_training|`` over
  the labels, the largest change in any one label's prior.

Both read as "how many percentage points of the mix moved", so one threshold serves both tasks.
Over ``threshold`` the task's alarm is on. With ``live`` (``tagger serve --adjust-priors live``) the
window's priors also adjust each batch's scores before the decision (``prior_shift.apply_priors``),
as ``tagger predict --adjust-priors`` does with a batch's own priors.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from train.errors import TaggerError
from train.models.base import TextClassifier
from train.models.prior_shift import adjust_priors, apply_priors

DEFAULT_WINDOW = 1000  # sentences
DEFAULT_MAX_AGE = 3600.0  # seconds
# chosen on the training corpora (bench/drift.py, never the seeds): 1.25 x the largest divergence of a
# 1,000-sentence window in the training mix from sentences the models never saw (0.107), rounded up to 0.05
DEFAULT_THRESHOLD = 0.15


@dataclass(frozen=True)
class DriftSettings:
    """How the service watches its label mix (``tagger serve --drift-*``, ``--adjust-priors live``).

    Re-estimates run once ``every_sentences`` new sentences arrived, at most once per ``min_interval``
    seconds, and every ``max_interval`` seconds while the window is not empty (so old sentences age
    out); a task needs ``min_sentences`` in its window before it has an estimate.
    """

    window: int = DEFAULT_WINDOW
    max_age: float = DEFAULT_MAX_AGE
    threshold: float = DEFAULT_THRESHOLD
    live: bool = False
    every_sentences: int = 50
    min_interval: float = 1.0
    max_interval: float = 10.0
    min_sentences: int = 100


def divergence(estimated: np.ndarray, training: np.ndarray, multilabel: bool) -> float:
    """Total variation between two label mixes: per label for multi-label (the largest), over classes else."""
    estimated, training = np.asarray(estimated, dtype=float), np.asarray(training, dtype=float)
    if multilabel:
        return float(np.max(np.abs(estimated - training)))
    return 0.5 * float(np.abs(estimated / estimated.sum() - training / training.sum()).sum())


@dataclass(frozen=True)
class Estimate:
    """One re-estimate of a task's window: ``priors`` is None below ``min_sentences``."""

    sentences: int
    priors: np.ndarray | None
    divergence: float | None
    alarm: bool
    at: float  # wall-clock time
    seconds: float  # time the EM took


class TaskDrift:
    """The window of one task's scores and its latest estimate; ``append`` and ``refresh`` are thread-safe."""

    def __init__(
        self,
        labels: list[str],
        multilabel: bool,
        training_priors: np.ndarray,
        settings: DriftSettings = DriftSettings(),
        clock: Callable[[], float] = time.time,
    ):
        self.labels = list(labels)
        self.multilabel = multilabel
        self.training_priors = np.asarray(training_priors, dtype=float)
        self.settings = settings
        self.clock = clock
        self._scores = np.zeros((settings.window, len(labels)))
        self._times = np.full(settings.window, -np.inf)  # -inf: an empty slot
        self._next = 0  # the slot the next sentence goes to
        self.seen = 0  # sentences appended since start
        self._lock = threading.Lock()
        self.estimate = Estimate(0, None, None, False, clock(), 0.0)

    def append(self, proba: np.ndarray, now: float | None = None) -> None:
        """Add the scores of a batch (one row per sentence) to the window: O(rows)."""
        proba = np.asarray(proba, dtype=float)
        now = self.clock() if now is None else now
        size = self.settings.window
        with self._lock:
            self.seen += len(proba)
            proba = proba[-size:]
            slots = (self._next + np.arange(len(proba))) % size
            self._scores[slots] = proba
            self._times[slots] = now
            self._next = (self._next + len(proba)) % size

    def window(self, now: float | None = None) -> np.ndarray:
        """A copy of the scores in the window: the last ``window`` sentences not older than ``max_age``."""
        now = self.clock() if now is None else now
        with self._lock:
            return self._scores[self._times >= now - self.settings.max_age].copy()

    def refresh(self, now: float | None = None) -> Estimate:
        """Re-estimate the window's priors (EM of ``prior_shift.adjust_priors``) and keep the result."""
        now = self.clock() if now is None else now
        scores = self.window(now)
        began = time.perf_counter()
        if len(scores) < self.settings.min_sentences:
            estimate = Estimate(len(scores), None, None, False, now, 0.0)
        else:
            priors, _ = adjust_priors(scores, self.training_priors, self.multilabel)
            gap = divergence(priors, self.training_priors, self.multilabel)
            seconds = time.perf_counter() - began
            estimate = Estimate(len(scores), priors, gap, gap > self.settings.threshold, now, seconds)
        self.estimate = estimate  # one reference: readers see the old or the new estimate whole
        return estimate

    def adjust(self, proba: np.ndarray) -> np.ndarray:
        """``proba`` adjusted to the window's estimated priors (unchanged while there is no estimate)."""
        priors = self.estimate.priors
        if priors is None:
            return proba
        return apply_priors(proba, self.training_priors, priors, self.multilabel)

    def report(self) -> dict:
        """The task's part of ``GET /v1/drift``."""
        estimate, s = self.estimate, self.settings
        return {
            "kind": "multilabel" if self.multilabel else "multiclass",
            "measure": "max |estimated - training| over labels"
            if self.multilabel
            else "total variation: 1/2 sum |estimated - training|",
            "window": {"sentences": estimate.sentences, "max_sentences": s.window, "max_age_s": s.max_age},
            "sentences_seen": self.seen,
            "estimated_priors": None if estimate.priors is None else _by_label(self.labels, estimate.priors),
            "training_priors": _by_label(self.labels, self.training_priors),
            "divergence": None if estimate.divergence is None else round(estimate.divergence, 6),
            "threshold": s.threshold,
            "alarm": estimate.alarm,
            "estimated_at": datetime.fromtimestamp(estimate.at, UTC).isoformat(timespec="seconds"),
        }


def _by_label(labels: list[str], values: np.ndarray) -> dict[str, float]:
    return {label: round(float(v), 6) for label, v in zip(labels, values, strict=True)}


class Drift:
    """The monitors of a tagger's tasks, and the thread that re-estimates them.

    A task whose model stores no ``priors_`` (a model saved before they existed) is not watched;
    ``live`` with such a model is an error. With ``background=False`` the re-estimates run inline in
    ``observe`` once ``every_sentences`` arrived (benches and tests: deterministic).
    """

    def __init__(self, models: dict[str, TextClassifier], settings: DriftSettings, background: bool = True):
        self.settings = settings
        self.tasks: dict[str, TaskDrift] = {}
        self.unwatched: dict[str, str] = {}
        for task, model in models.items():
            priors = getattr(model, "priors_", None)
            if priors is None:
                self.unwatched[task] = "the model stores no label priors (its decision was never tuned)"
                if settings.live:
                    raise TaggerError(f"--adjust-priors live: the {task} model stores no label priors; retrain it")
                continue
            self.tasks[task] = TaskDrift(model.labels, model.multilabel, priors, settings)
        self.background = background
        self._new = 0  # sentences since the last re-estimate
        self._last = 0.0  # monotonic time of the last re-estimate
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._count_lock = threading.Lock()

    def observe(self, scores: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Append a batch's scores per task; returns the scores to decide on (adjusted when ``live``)."""
        if not self.tasks:
            return scores
        for task, proba in scores.items():
            if task in self.tasks:
                self.tasks[task].append(proba)
        with self._count_lock:
            self._new += len(next(iter(scores.values())))
            due = self._new >= self.settings.every_sentences
        if self.background:
            self._ensure_thread()
            if due:
                self._wake.set()
        elif due:
            self.refresh()
        if not self.settings.live:
            return scores
        return {task: self.tasks[task].adjust(p) if task in self.tasks else p for task, p in scores.items()}

    def refresh(self) -> None:
        """Re-estimate every task now."""
        with self._count_lock:
            self._new = 0
        self._last = time.monotonic()
        for monitor in self.tasks.values():
            monitor.refresh()

    def _ensure_thread(self) -> None:
        if self._thread is not None or self._closed:
            return
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="tagger-drift", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        s = self.settings
        while not self._closed:
            woken = self._wake.wait(timeout=s.max_interval)
            if self._closed:
                return
            pause = s.min_interval - (time.monotonic() - self._last)
            if woken and pause > 0:
                time.sleep(pause)  # at most one re-estimate per min_interval, however fast sentences come
            self._wake.clear()
            if self._new or any(m.estimate.sentences for m in self.tasks.values()):
                try:
                    self.refresh()
                except Exception:  # noqa: BLE001 - a failed estimate must not stop the monitor
                    import logging

                    logging.getLogger("tagger").exception("drift re-estimate failed")

    def close(self) -> None:
        """Stop the re-estimating thread (a tagger replaced by a reload, or the server stopping)."""
        self._closed = True
        self._wake.set()

    def report(self) -> dict:
        """``GET /v1/drift``: per task the window, the priors (estimated, training), divergence and alarm."""
        return {
            "adjust_priors": "live" if self.settings.live else "off",
            "tasks": {task: monitor.report() for task, monitor in self.tasks.items()},
            "unwatched": self.unwatched,
        }


def attach(tagger, settings: DriftSettings):
    """Give ``tagger`` (a ``train.serving.tagger.Tagger``) a fresh ``Drift`` and return it."""
    tagger.drift = Drift({"topic": tagger.topic, "stance": tagger.stance}, settings)
    return tagger


class DriftCollector:
    """Prometheus collector of the current tagger's drift: ``tagger_drift_divergence{task}``,
    ``tagger_drift_prior{task,label,kind=estimated|training}`` and ``tagger_drift_alarm{task}``."""

    def __init__(self, current: Callable[[], Drift | None]):
        self.current = current

    def describe(self):
        return self._families(None)

    def collect(self):
        return self._families(self.current())

    @staticmethod
    def _families(drift: Drift | None):
        from prometheus_client.core import GaugeMetricFamily

        gap = GaugeMetricFamily(
            "tagger_drift_divergence", "Total variation of the window's label priors from training's", labels=["task"]
        )
        prior = GaugeMetricFamily(
            "tagger_drift_prior", "Label priors: the window's estimate, or training's", labels=["task", "label", "kind"]
        )
        alarm = GaugeMetricFamily("tagger_drift_alarm", "1 when the divergence is over the threshold", labels=["task"])
        for task, monitor in (drift.tasks if drift is not None else {}).items():
            estimate = monitor.estimate
            alarm.add_metric([task], float(estimate.alarm))
            if estimate.divergence is not None:
                gap.add_metric([task], estimate.divergence)
            for j, label in enumerate(monitor.labels):
                prior.add_metric([task, label, "training"], float(monitor.training_priors[j]))
                if estimate.priors is not None:
                    prior.add_metric([task, label, "estimated"], float(estimate.priors[j]))
        return [gap, prior, alarm]
