"""List and compare a task's MLflow runs."""

from __future__ import annotations

import sys

import mlflow
import pandas as pd

from train import tracking
from train.errors import TaggerError


def finished_runs(experiment: str, task: str) -> pd.DataFrame:
    """Finished runs of an experiment; a clear error when the experiment does not exist."""
    tracking.setup()
    if mlflow.get_experiment_by_name(experiment) is None:
        raise TaggerError(f"no experiment '{experiment}' in {mlflow.get_tracking_uri()}; train a {task} config first")
    return mlflow.search_runs(experiment_names=[experiment], filter_string="attributes.status = 'FINISHED'")


LOWER_IS_BETTER = {"train_seconds", "model_size_mb", "model_parameters"}


def lower_is_better(metric: str) -> bool:
    """Losses (``seeds/hamming_loss``, ``dev/loss``), time and size rank ascending; scores descending."""
    name = metric.rsplit("/", 1)[-1]
    return name.endswith("loss") or name in LOWER_IS_BETTER


def rank(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Best first by ``metric``; ties go to higher dev macro F1, then to the newer run."""
    runs = runs.copy()
    if "metrics.dev/f1_macro" not in runs.columns:
        runs["metrics.dev/f1_macro"] = float("nan")
    return runs.sort_values(
        [f"metrics.{metric}", "metrics.dev/f1_macro", "start_time"],
        ascending=[lower_is_better(metric), False, False],
        na_position="last",
    )


def list_runs(task: str, metric: str, experiment: str | None = None, limit: int = 20) -> pd.DataFrame:
    """Finished runs of a task, best first by ``metric`` (then dev macro F1, then newest)."""
    frame = finished_runs(experiment or f"tagger-{task}", task)
    if frame.empty:
        return pd.DataFrame(columns=["run_id", "run_name", "family", metric])
    column = f"metrics.{metric}"
    if column not in frame.columns:
        known = sorted(c.removeprefix("metrics.") for c in frame.columns if c.startswith("metrics."))
        raise TaggerError(f"no run logged metric '{metric}'; known metrics include: {', '.join(known[:12])}")
    frame = rank(frame, metric)
    shown = {
        "run_id": frame["run_id"],
        "run_name": frame.get("tags.mlflow.runName"),
        "family": frame.get("tags.model_family"),
        metric: frame[column].round(4),
        f"{metric}_ci": [
            f"[{lo:.3f}, {hi:.3f}]" if pd.notna(lo) else ""
            for lo, hi in zip(
                frame.get(f"{column}_ci_low", pd.Series([None] * len(frame))),
                frame.get(f"{column}_ci_high", pd.Series([None] * len(frame))),
                strict=True,
            )
        ],
        "dev/f1_macro": frame["metrics.dev/f1_macro"].round(4),
        "started": frame["start_time"].dt.strftime("%Y-%m-%d %H:%M"),
    }
    return pd.DataFrame(shown).head(limit).reset_index(drop=True)


def render_table(table: pd.DataFrame, metric: str) -> None:
    from rich.console import Console
    from rich.table import Table

    out = Table(title=f"runs by {metric}")
    for column in table.columns:
        out.add_column(str(column), justify="right" if table[column].dtype.kind == "f" else "left")
    for row in table.itertuples(index=False):
        out.add_row(*["" if pd.isna(v) else str(v) for v in row])
    # a pipe or CI log gets a wide table instead of one wrapped at 80 columns
    Console(width=None if sys.stdout.isatty() else 180).print(out)
