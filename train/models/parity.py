"""Backend parity: does a faster inference backend still give the reference backend's answers?

A backend (ONNX, int8 ONNX) is compared with the family's reference backend (PyTorch) on the same
sentences: the share of sentences with the same decision (the exact topic set at the tuned
thresholds; the same stance after class offsets), and the largest and mean absolute score
difference. Below ``MIN_AGREEMENT`` a backend is refused unless forced; ``auto`` picks the fastest
backend that holds parity.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

MIN_AGREEMENT = 0.99
AUTO = "auto"


def compare_scores(reference: np.ndarray, other: np.ndarray, decide: Callable[[np.ndarray], list]) -> dict[str, float]:
    """Agreement of decisions and absolute score differences of ``other`` against ``reference``."""
    ours, theirs = decide(reference), decide(other)
    same = [set(a) == set(b) if isinstance(a, list) else a == b for a, b in zip(ours, theirs, strict=True)]
    difference = np.abs(np.asarray(reference, dtype=float) - np.asarray(other, dtype=float))
    return {
        "agreement": float(np.mean(same)) if same else 1.0,
        "max_abs_diff": float(difference.max()) if difference.size else 0.0,
        "mean_abs_diff": float(difference.mean()) if difference.size else 0.0,
    }


def timed(score: Callable[[], np.ndarray], sentences: int) -> tuple[np.ndarray, float]:
    """Scores and sentences per second of one call of ``score`` (after the caller's warm-up)."""
    start = time.perf_counter()
    scores = score()
    return scores, sentences / max(time.perf_counter() - start, 1e-9)


def choose(current: str, reference: str, parity: dict[str, dict[str, float]] | None) -> str:
    """The fastest backend holding parity; without parity figures (none were measured), the backend the
    model is set to."""
    if not parity:
        return current
    holding = {b: m for b, m in parity.items() if b == reference or m["agreement"] >= MIN_AGREEMENT}
    return max(holding, key=lambda b: holding[b].get("sentences_per_second", 0.0))


def refusal(backend: str, reference: str, figures: dict[str, float]) -> str:
    """The one-line reason a backend is refused."""
    return (
        f"backend '{backend}' agrees with {reference} on {figures['agreement']:.1%} of "
        f"{int(figures.get('sentences', 0))} sentences (max score difference {figures['max_abs_diff']:.3f}), "
        f"below the {MIN_AGREEMENT:.0%} needed: use --backend auto, or --force-backend to use it anyway"
    )
