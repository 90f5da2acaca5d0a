"""List and compare a task's MLflow runs."""

from __future__ import annotations

import mlflow
import pandas as pd

from train import tracking
from train.errors import TaggerError


def list_runs(task: str, metric: str, experiment: str | None = None, limit: int = 20) -> pd.DataFrame:
    """Finished runs of a task, best first by ``metric`` (then dev macro F1, then newest)."""
    tracking.setup()
    name = experiment or f"tagger-{task}"
    if mlflow.get_experiment_by_name(name) is None:
        raise TaggerError(f"no experiment '{name}' in {mlflow.get_tracking_uri()}; train a {task} config first")
    frame = mlflow.search_runs(experiment_names=[name], filter_string="attributes.status = 'FINISHED'")
    if frame.empty:
        return pd.DataFrame(columns=["run_id", "run_name", "family", metric])
    column = f"metrics.{metric}"
    if column not in frame.columns:
        known = sorted(c.removeprefix("metrics.") for c in frame.columns if c.startswith("metrics."))
        raise TaggerError(f"no run logged metric '{metric}'; known metrics include: {', '.join(known[:12])}")
    frame = frame.sort_values([column, "metrics.dev/f1_macro", "start_time"], ascending=False, na_position="last")
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
        "dev/f1_macro": frame.get("metrics.dev/f1_macro", pd.Series(dtype=float)).round(4),
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
    import sys

    # a pipe or CI log gets a wide table instead of one wrapped at 80 columns
    Console(width=None if sys.stdout.isatty() else 180).print(out)
