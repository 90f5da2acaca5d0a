"""Evaluate a classifier on a labelled set: metrics, confidence intervals, tables and plots."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from train.data.loading import LabelledData
from train.evaluation.metrics import bootstrap_cis, multiclass_metrics, multilabel_metrics
from train.models.base import TextClassifier


@dataclass
class EvalResult:
    """Metrics and per-sentence predictions of one model on one labelled set."""

    name: str
    metrics: dict[str, float]
    predictions: pd.DataFrame
    gold: np.ndarray
    pred: np.ndarray
    labels: list[str]
    multilabel: bool
    warnings: list[str] = field(default_factory=list)

    @property
    def misclassified(self) -> pd.DataFrame:
        return self.predictions[~self.predictions["correct"]]

    def write(self, folder: Path) -> list[Path]:
        """Write report JSON, predictions, misclassified rows and confusion-matrix PNG(s)."""
        folder.mkdir(parents=True, exist_ok=True)
        paths = [
            folder / f"{self.name}_metrics.json",
            folder / f"{self.name}_predictions.csv",
            folder / f"{self.name}_misclassified.csv",
            folder / f"{self.name}_confusion.png",
        ]
        report = {"set": self.name, "n": len(self.predictions), "metrics": self.metrics, "warnings": self.warnings}
        paths[0].write_text(json.dumps(report, indent=2), encoding="utf-8")
        self.predictions.to_csv(paths[1], index=False)
        self.misclassified.to_csv(paths[2], index=False)
        plot_confusion(self, paths[3])
        return paths


def evaluate(
    model: TextClassifier,
    data: LabelledData,
    name: str,
    *,
    bootstrap_samples: int = 1000,
    confidence: float = 0.95,
    seed: int = 13,
    train_labels: set[str] | None = None,
    predicted: list | None = None,
) -> EvalResult:
    """Score ``data`` with ``model`` and compute the task's metrics.

    ``predicted``: the labels of each sentence when they were decided elsewhere (dev's cross-fitted
    decisions); by default the model's own decision.
    """
    proba = model.predict_proba(data.inputs)
    if predicted is None:
        predicted = model.decide(proba)
    elif len(predicted) != len(data):
        raise ValueError(f"{name}: {len(predicted)} decisions for {len(data)} sentences")
    labels = model.labels
    gold = model.encode(data.labels)
    pred = model.encode(predicted)
    if model.multilabel:
        metrics = multilabel_metrics(gold, pred, labels)
        correct = (gold == pred).all(axis=1)
        fmt = lambda v: ";".join(v)  # noqa: E731
    else:
        metrics = multiclass_metrics(gold, pred, labels)
        correct = gold == pred
        fmt = str
    intervals = bootstrap_cis(gold, pred, labels, model.multilabel, bootstrap_samples, confidence, seed)
    for metric, (low, high) in intervals.items():
        metrics[f"{metric}_ci_low"], metrics[f"{metric}_ci_high"] = low, high
    table = pd.DataFrame(
        {
            "id": data.frame["id"].values,
            "text": data.frame["text"].values,
            "target": data.frame["target"].values,
            "gold": [fmt(v) for v in data.labels],
            "predicted": [fmt(v) for v in predicted],
            "correct": correct,
        }
    )
    for j, label in enumerate(labels):
        table[f"score_{label}"] = np.round(proba[:, j], 4)
    warnings = []
    if train_labels is not None:
        seen_here = {lab for v in data.labels for lab in (v if model.multilabel else [v])}
        for label in sorted(seen_here - train_labels):
            warnings.append(f"{name}: label '{label}' occurs in this set but never in the training data")
    return EvalResult(name, metrics, table, gold, pred, labels, model.multilabel, warnings)


def plot_confusion(result: EvalResult, path: Path) -> None:
    """Confusion matrix (multi-class) or one 2x2 matrix per label (multi-label) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay, confusion_matrix, multilabel_confusion_matrix

    if result.multilabel:
        matrices = multilabel_confusion_matrix(result.gold, result.pred)
        fig, axes = plt.subplots(1, len(result.labels), figsize=(3.2 * len(result.labels), 3.2))
        for ax, label, matrix in zip(np.atleast_1d(axes), result.labels, matrices, strict=True):
            ConfusionMatrixDisplay(matrix, display_labels=["no", "yes"]).plot(ax=ax, colorbar=False)
            ax.set_title(label)
    else:
        matrix = confusion_matrix(result.gold, result.pred, labels=list(range(len(result.labels))))
        fig, ax = plt.subplots(figsize=(4.5, 4))
        ConfusionMatrixDisplay(matrix, display_labels=result.labels).plot(ax=ax, colorbar=False)
    fig.suptitle(f"{result.name}: confusion")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def evaluate_model(
    reference: str,
    data_path: Path,
    labels_column: str | None = None,
    backend: str | None = None,
    force_backend: bool = False,
) -> tuple[dict, EvalResult]:
    """Evaluate a logged model on a labelled file in the project's schema; the report and the result."""
    from train.config import Columns
    from train.data.loading import load_labelled
    from train.domain import LABEL_COLUMNS
    from train.tracking.packaging import load_classifier

    classifier = load_classifier(reference, backend, force_backend)
    columns = Columns(
        labels=labels_column or LABEL_COLUMNS[classifier.task_type],
        target=None if classifier.multilabel else "target",
    )
    data = load_labelled(data_path, task_type=classifier.task_type, labels=classifier.labels, columns=columns)
    result = evaluate(classifier, data, Path(data_path).stem)
    metrics = {name: round(value, 4) for name, value in result.metrics.items()}
    return {"model": reference, "data": str(data_path), "n": len(data), "metrics": metrics}, result


def score_table(results: list[EvalResult]) -> str:
    """The headline metrics of each evaluated set, with their bootstrap intervals, as a text table."""
    from train.evaluation.metrics import headline_metrics

    if not results:
        return ""
    names = list(headline_metrics(results[0].labels, results[0].multilabel))
    header = ["set", "n", *names]
    rows = []
    for result in results:
        cells = [result.name, str(len(result.predictions))]
        for name in names:
            keys = (name, f"{name}_ci_low", f"{name}_ci_high")
            value, low, high = (result.metrics.get(k, float("nan")) for k in keys)
            cells.append(f"{value:.3f}" + (f" [{low:.3f}, {high:.3f}]" if np.isfinite(low) else ""))
        rows.append(cells)
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in [header, *rows]]
    return "\n".join(line.rstrip() for line in lines)
