"""Per-sentence weights through scikit-learn estimators, with its metadata routing.

A pipeline or a one-vs-rest wrapper passes ``sample_weight`` on only where routing is on and each
classifier that takes weights asks for them (``set_fit_request``); the text features take none.
"""

from __future__ import annotations

import numpy as np
import sklearn
from sklearn.base import BaseEstimator


def fit_weighted(estimator: BaseEstimator, X, y, sample_weight: np.ndarray | None = None) -> BaseEstimator:
    """``estimator.fit(X, y)``, with ``sample_weight`` routed to every step whose ``fit`` takes it."""
    if sample_weight is None:
        return estimator.fit(X, y)
    with sklearn.config_context(enable_metadata_routing=True):
        for part in [estimator, *estimator.get_params(deep=True).values()]:
            if isinstance(part, BaseEstimator) and hasattr(part, "set_fit_request"):
                part.set_fit_request(sample_weight=True)
        return estimator.fit(X, y, sample_weight=sample_weight)
