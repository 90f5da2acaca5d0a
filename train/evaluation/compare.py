"""Paired comparison of two runs on the same evaluation set: is the difference real?

Both runs' per-sentence predictions (the ``reports/<set>_predictions.csv`` every run logs) are lined
up by sentence id. A paired bootstrap resamples sentences, scores both runs on each resample and
reports the difference B − A with its percentile interval and a two-sided p-value (how often the
resampled difference falls on the other side of zero, doubled). McNemar's exact test compares
exact-match accuracy. Runs scored on different data are refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from train.errors import TaggerError
from train.evaluation.metrics import headline_metrics


@dataclass
class Difference:
    """B − A for one metric: point value, interval, p-value."""

    name: str
    a: float
    b: float
    diff: float
    low: float
    high: float
    p_value: float

    def row(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


@dataclass
class Comparison:
    """The outcome of ``compare_predictions``: the chosen metric, every label's F1 and McNemar's test."""

    set_name: str
    n: int
    metric: Difference
    labels: list[Difference]
    mcnemar: dict
    samples: int
    confidence: float
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "set": self.set_name,
            "n": self.n,
            "samples": self.samples,
            "confidence": self.confidence,
            "metric": self.metric.row(),
            "labels": [d.row() for d in self.labels],
            "mcnemar_exact_match": self.mcnemar,
            **self.extra,
        }


def _p_value(diffs: np.ndarray) -> float:
    """Two-sided paired-bootstrap p-value: twice the share of resamples on the far side of zero (at most 1)."""
    return float(min(1.0, 2 * min(np.mean(diffs <= 0), np.mean(diffs >= 0))))


def _difference(name: str, a_values: np.ndarray, b_values: np.ndarray, a: float, b: float, alpha: float) -> Difference:
    diffs = b_values - a_values
    low, high = np.quantile(diffs, [alpha, 1 - alpha])
    return Difference(name, float(a), float(b), float(b - a), float(low), float(high), _p_value(diffs))


def _weighted_metrics(
    weights: np.ndarray, gold: np.ndarray, pred: np.ndarray, labels: list[str], multilabel: bool
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The headline metrics (see ``headline_metrics``) of each row of sentence ``weights``, and per-label F1.

    A bootstrap resample is a row of counts per sentence, so true/false positives are matrix products.
    """
    gold, pred = gold.astype(float), pred.astype(float)
    tp, fp, fn = weights @ (gold * pred), weights @ ((1 - gold) * pred), weights @ (gold * (1 - pred))
    denominator = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(denominator), where=denominator > 0)
    total = weights.sum(axis=1)
    scores = {"f1_macro": f1.mean(axis=1)}
    if multilabel:
        micro = 2 * tp.sum(axis=1) + fp.sum(axis=1) + fn.sum(axis=1)
        scores["f1_micro"] = np.divide(2 * tp.sum(axis=1), micro, out=np.zeros_like(micro), where=micro > 0)
        scores["hamming_loss"] = weights @ (gold != pred).mean(axis=1) / total
    else:
        scores["accuracy"] = weights @ (gold == pred).all(axis=1) / total
        if "favor" in labels and "against" in labels:
            scores["f_avg"] = f1[:, [labels.index("favor"), labels.index("against")]].mean(axis=1)
    return scores, f1


def mcnemar_exact(a_right: np.ndarray, b_right: np.ndarray) -> dict:
    """McNemar's exact (binomial) test on exact-match correctness of paired predictions."""
    from scipy.stats import binomtest

    only_a = int(np.sum(a_right & ~b_right))
    only_b = int(np.sum(~a_right & b_right))
    p = 1.0 if only_a + only_b == 0 else float(binomtest(only_a, only_a + only_b, 0.5).pvalue)
    return {"only_a_right": only_a, "only_b_right": only_b, "p_value": round(p, 4)}


def compare_predictions(
    gold: np.ndarray,
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    labels: list[str],
    multilabel: bool,
    metric: str = "f1_macro",
    samples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 13,
    set_name: str = "",
) -> Comparison:
    """Paired bootstrap of B − A on indicator arrays (multi-label) or class indices (multi-class)."""
    metrics = headline_metrics(labels, multilabel)
    if metric not in metrics:
        raise TaggerError(f"--metric {metric}: choose one of {', '.join(metrics)}")
    if not multilabel:
        eye = np.eye(len(labels), dtype=int)
        gold, pred_a, pred_b = eye[gold], eye[pred_a], eye[pred_b]
    rng = np.random.default_rng(seed)
    alpha = (1 - confidence) / 2
    n = len(gold)
    a_values, b_values, label_a, label_b = [], [], [], []
    for chunk in np.array_split(np.arange(samples), max(1, samples // 500)):  # bounded memory
        # each resample as counts per sentence: its metrics are then a few matrix products
        index = rng.integers(0, n, size=(len(chunk), n)) + np.arange(len(chunk))[:, None] * n
        weights = np.bincount(index.ravel(), minlength=len(chunk) * n).reshape(len(chunk), n).astype(float)
        for pred, values, per_label in ((pred_a, a_values, label_a), (pred_b, b_values, label_b)):
            scores, f1 = _weighted_metrics(weights, gold, pred, labels, multilabel)
            values.append(scores[metric])
            per_label.append(f1)
    a_values, b_values = np.concatenate(a_values), np.concatenate(b_values)
    label_a, label_b = np.concatenate(label_a), np.concatenate(label_b)
    points = [_weighted_metrics(np.ones((1, n)), gold, p, labels, multilabel) for p in (pred_a, pred_b)]
    (point_a, f1_a), (point_b, f1_b) = ((scores[metric][0], f1[0]) for scores, f1 in points)
    per_label = [
        _difference(f"f1_{label}", label_a[:, j], label_b[:, j], f1_a[j], f1_b[j], alpha)
        for j, label in enumerate(labels)
    ]
    right_a, right_b = (gold == pred_a).all(axis=1), (gold == pred_b).all(axis=1)
    return Comparison(
        set_name,
        len(gold),
        _difference(metric, a_values, b_values, point_a, point_b, alpha),
        per_label,
        mcnemar_exact(right_a, right_b),
        samples,
        confidence,
    )


# --- runs ---------------------------------------------------------------------------------------------


def _run_predictions(run_id: str, set_name: str) -> tuple[pd.DataFrame, dict]:
    import mlflow

    from train.tracking import store

    store.setup()
    run_id = store.resolve_run_id(run_id)  # a unique prefix, as 'tagger runs' shows it
    try:
        run = mlflow.get_run(run_id)
    except Exception:  # noqa: BLE001 - MLflow raises several types for an unknown id
        raise TaggerError(f"run '{run_id}': not found in {store.redact(mlflow.get_tracking_uri())}") from None
    try:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=f"reports/{set_name}_predictions.csv")
    except Exception:  # noqa: BLE001
        raise TaggerError(f"run '{run_id}': has no predictions for set '{set_name}'") from None
    return pd.read_csv(path, keep_default_na=False, dtype={"id": str}), {**run.data.tags, "tagger.run_id": run_id}


def check_same_data(set_name: str, tags_a: dict, tags_b: dict, ids_a: list, ids_b: list) -> None:
    """Refuse runs scored on different data: their dataset hashes or sentence ids differ."""
    key = f"dataset_sha256.{set_name}"
    if tags_a.get(key) != tags_b.get(key):
        raise TaggerError(
            f"the runs were scored on different '{set_name}' data "
            f"(sha256 {str(tags_a.get(key))[:12]} vs {str(tags_b.get(key))[:12]})"
        )
    if sorted(ids_a) != sorted(ids_b):
        raise TaggerError(f"the runs' '{set_name}' predictions cover different sentences")


def compare_runs(
    run_a: str, run_b: str, set_name: str = "seeds", metric: str = "f1_macro", samples: int = 10_000
) -> Comparison:
    """Compare two logged runs on evaluation set ``set_name`` (B − A)."""
    frame_a, tags_a = _run_predictions(run_a, set_name)
    frame_b, tags_b = _run_predictions(run_b, set_name)
    check_same_data(set_name, tags_a, tags_b, frame_a["id"].tolist(), frame_b["id"].tolist())
    if tags_a.get("task_type") != tags_b.get("task_type"):
        raise TaggerError("the runs are of different task types")
    labels = [c.removeprefix("score_") for c in frame_a.columns if c.startswith("score_")]
    if labels != [c.removeprefix("score_") for c in frame_b.columns if c.startswith("score_")]:
        raise TaggerError("the runs have different label sets")
    multilabel = tags_a.get("task_type") == "multilabel"
    frame_b = frame_b.set_index("id").loc[frame_a["id"]].reset_index()

    def encode(column: pd.Series) -> np.ndarray:
        if multilabel:
            return np.array([[int(label in str(v).split(";")) for label in labels] for v in column])
        return np.array([labels.index(str(v)) for v in column])

    result = compare_predictions(
        encode(frame_a["gold"]),
        encode(frame_a["predicted"]),
        encode(frame_b["predicted"]),
        labels,
        multilabel,
        metric,
        samples,
        set_name=set_name,
    )
    result.extra = {
        "run_a": tags_a["tagger.run_id"],
        "run_b": tags_b["tagger.run_id"],
        "runs": {side: run_label(tags) for side, tags in (("a", tags_a), ("b", tags_b))},
    }
    return result


def run_label(tags: dict) -> dict:
    """Who a side of the comparison is: short id, run name, family and config (from the run's tags)."""
    from train.tracking.store import SHORT_ID

    return {
        "id": tags["tagger.run_id"][:SHORT_ID],
        "name": tags.get("mlflow.runName", ""),
        "family": tags.get("model_family", ""),
    }


def render_comparison(result: Comparison) -> str:
    """The comparison as a text table: the metric, then each label's F1, then McNemar."""
    rows = [result.metric, *result.labels]
    header = ["metric", "A", "B", "B - A", f"{result.confidence:.0%} interval", "p"]
    body = [
        [d.name, f"{d.a:.4f}", f"{d.b:.4f}", f"{d.diff:+.4f}", f"[{d.low:+.4f}, {d.high:+.4f}]", f"{d.p_value:.4f}"]
        for d in rows
    ]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *body]]
    m = result.mcnemar
    lines.append(
        f"exact match, McNemar: only A right {m['only_a_right']}, only B right {m['only_b_right']}, p = {m['p_value']}"
    )
    lines.insert(0, f"{result.set_name}: {result.n} sentences, {result.samples} paired bootstrap resamples (B - A)")
    for side in ("b", "a"):  # which run is A and which is B, above the table
        run = result.extra.get("runs", {}).get(side)
        if run:
            lines.insert(0, f"{side.upper()}: {run['id']}  {run['name']}  ({run['family'] or 'family unknown'})")
    return "\n".join(lines)
