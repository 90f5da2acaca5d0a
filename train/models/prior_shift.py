"""Label-prior shift correction at prediction time (Saerens, Latinne and Decaestecker, 2002).

A model's scores assume the label priors of the data it was tuned on (``priors_``, the mean
held-out score). A batch to tag may have other priors (real news is mostly neutral). EM re-estimates
the batch's priors from the model's own posteriors, without labels, and rescales the posteriors:

    p_new(y|x) ∝ p(y|x) · π_new(y) / π_train(y),    π_new(y) = mean over the batch of p_new(y|x)

iterated to a fixed point. Multi-class scores are adjusted over the classes; multi-label scores label
by label, each as a binary problem.
"""

from __future__ import annotations

import numpy as np

MIN_PRIOR = 1e-6


def _normalized(priors) -> np.ndarray:
    priors = np.clip(np.asarray(priors, dtype=float), MIN_PRIOR, None)
    return priors / priors.sum()


def _reweighted(proba: np.ndarray, priors: np.ndarray, train_priors: np.ndarray) -> np.ndarray:
    """Bayes' rule for new priors: rows of ``proba`` times ``priors / train_priors``, renormalized."""
    weighted = proba * (priors / train_priors)
    return weighted / np.clip(weighted.sum(axis=1, keepdims=True), MIN_PRIOR, None)


def em_priors(proba: np.ndarray, train_priors: np.ndarray, max_iter: int = 200, tol: float = 1e-6):
    """Batch priors and adjusted posteriors of multi-class scores ``proba`` (rows sum to 1)."""
    train_priors = _normalized(train_priors)
    priors = train_priors.copy()
    adjusted = proba
    for _ in range(max_iter):
        adjusted = _reweighted(proba, priors, train_priors)
        new = np.clip(adjusted.mean(axis=0), MIN_PRIOR, None)
        if np.max(np.abs(new - priors)) < tol:
            priors = new
            break
        priors = new
    return priors, adjusted


def adjust_priors(proba: np.ndarray, train_priors: np.ndarray, multilabel: bool) -> tuple[np.ndarray, np.ndarray]:
    """Re-estimate the label priors on this batch and adjust ``proba``; returns (batch priors, adjusted scores)."""
    proba = np.asarray(proba, dtype=float)
    if len(proba) == 0:
        return np.asarray(train_priors, dtype=float), proba
    if not multilabel:
        return em_priors(proba, train_priors)
    priors, adjusted = np.zeros(proba.shape[1]), np.zeros_like(proba)
    for j in range(proba.shape[1]):
        pair = np.column_stack([1 - proba[:, j], proba[:, j]])
        p = float(np.clip(train_priors[j], MIN_PRIOR, 1 - MIN_PRIOR))
        batch, scores = em_priors(pair, np.array([1 - p, p]))
        priors[j], adjusted[:, j] = batch[1], scores[:, 1]
    return priors, adjusted


def apply_priors(proba: np.ndarray, train_priors: np.ndarray, priors: np.ndarray, multilabel: bool) -> np.ndarray:
    """``proba`` adjusted to known label ``priors`` (one step of Bayes' rule, no EM): what ``adjust_priors``
    does with priors estimated elsewhere, e.g. on a window of earlier sentences (``tagger serve
    --adjust-priors live``)."""
    proba = np.asarray(proba, dtype=float)
    if len(proba) == 0:
        return proba
    if not multilabel:
        return _reweighted(proba, _normalized(priors), _normalized(train_priors))
    adjusted = np.zeros_like(proba)
    for j in range(proba.shape[1]):
        pair = np.column_stack([1 - proba[:, j], proba[:, j]])
        p = float(np.clip(train_priors[j], MIN_PRIOR, 1 - MIN_PRIOR))
        q = float(np.clip(priors[j], MIN_PRIOR, 1 - MIN_PRIOR))
        adjusted[:, j] = _reweighted(pair, np.array([1 - q, q]), _normalized([1 - p, p]))[:, 1]
    return adjusted
