"""List and compare a task's MLflow runs."""

from __future__ import annotations

import sys

import mlflow
import pandas as pd

from train.domain import experiment_name
from train.errors import TaggerError
from train.tracking import store


def all_runs(experiment: str, task: str) -> pd.DataFrame:
    """Every run of an experiment, whatever its status; a clear error when the experiment does not exist.

    Runs left RUNNING by a process that died are marked KILLED first (``store.mark_stale_runs``).
    """
    store.setup()
    if mlflow.get_experiment_by_name(experiment) is None:
        raise TaggerError(f"no experiment '{experiment}' in {mlflow.get_tracking_uri()}; train a {task} config first")
    store.mark_stale_runs()
    return mlflow.search_runs(experiment_names=[experiment])


def has_model(runs: pd.DataFrame) -> pd.Series:
    """Which runs logged a model: config ``tracking.log_model`` was not false, and not a part of a larger run."""
    if "params.tracking.log_model" not in runs.columns:
        return ~is_part(runs)
    return (runs["params.tracking.log_model"] != "False") & ~is_part(runs)


def finished_runs(experiment: str, task: str) -> pd.DataFrame:
    """The candidates for ranking, promotion and serving: finished runs that logged a model.

    One rule for ``tagger runs``, ``tagger promote`` and the benchmarks: a run without a model can
    never be chosen.
    """
    runs = all_runs(experiment, task)
    if runs.empty:
        return runs
    runs = runs[(runs["status"] == "FINISHED") & has_model(runs)].reset_index(drop=True)
    return with_validation_metric(runs)


VALIDATION_METRIC = "validation/f1_macro"


CV, DEV = "cv", "dev"  # the kinds of validation score: a CV mean over folds, a single dev split's score
SCORE_KIND = "score_kind"  # the column that says which kind a run's validation score is


def with_validation_metric(runs: pd.DataFrame) -> pd.DataFrame:
    """Add ``validation/f1_macro``: the cross-validated mean where a run has one, else its dev score;
    ``score_kind`` says which (``cv``, ``dev``; None without either).

    This is what model choice should rank by, one kind at a time (``comparable_kind``); the seeds and
    other evaluation sets are test scores. A CV score keeps its fold std (``validation/f1_macro_std``),
    a dev score its bootstrap interval (``_ci_low``, ``_ci_high``): the noise that ``mark_ties`` uses.
    """
    runs = runs.copy()
    nothing = pd.Series(float("nan"), index=runs.index)
    cv = runs.get("metrics.cv/f1_macro_mean", nothing)
    dev = runs.get("metrics.dev/f1_macro", nothing)
    runs[f"metrics.{VALIDATION_METRIC}"] = cv.fillna(dev)
    runs[SCORE_KIND] = pd.Series(None, index=runs.index, dtype=object).mask(dev.notna(), DEV).mask(cv.notna(), CV)
    runs[f"metrics.{VALIDATION_METRIC}_std"] = runs.get("metrics.cv/f1_macro_std", nothing).where(cv.notna())
    for bound in ("ci_low", "ci_high"):  # a dev score keeps its bootstrap interval (CV runs show ± std)
        dev_bound = runs.get(f"metrics.dev/f1_macro_{bound}", nothing)
        runs[f"metrics.{VALIDATION_METRIC}_{bound}"] = dev_bound.where(cv.isna())
    return runs


def comparable_kind(runs: pd.DataFrame) -> str | None:
    """The kind of validation score that runs are compared by: ``cv`` when any run is cross-validated,
    else ``dev`` (None when no run has a validation score)."""
    kinds = set(runs.get(SCORE_KIND, pd.Series(dtype=object)).dropna())
    return CV if CV in kinds else DEV if DEV in kinds else None


def tie_floor(leader: pd.Series) -> float | None:
    """The lowest validation score still tied with ``leader``: its CV mean less 2 fold stds, or the low
    end of its dev score's bootstrap interval (None when its score has no measure of noise)."""
    column = f"metrics.{VALIDATION_METRIC}"
    if leader.get(SCORE_KIND) == CV:
        std = leader.get(f"{column}_std")
        return None if pd.isna(std) else float(leader[column] - 2 * std)
    low = leader.get(f"{column}_ci_low")
    return None if pd.isna(low) else float(low)


TIE_RULE = "within the leader's bootstrap interval (dev) or 2 fold stds (cv)"


def mark_ties(ranked: pd.DataFrame) -> pd.Series:
    """``best`` on the leader of the compared kind, ``tie`` on each run of that kind whose validation
    score is within the leader's noise (``tie_floor``), else empty. ``ranked``: best first."""
    marks = pd.Series("", index=ranked.index, dtype=object)
    kind = comparable_kind(ranked)
    if kind is None or SCORE_KIND not in ranked.columns:
        return marks
    same = ranked[ranked[SCORE_KIND] == kind]
    leader = same.iloc[0]
    marks[same.index[0]] = "best"
    floor = tie_floor(leader)
    if floor is not None:
        scores = same[f"metrics.{VALIDATION_METRIC}"].iloc[1:]
        marks[scores.index[scores >= floor - 1e-12]] = "tie"
    return marks


CONFIG_FREE = ("params.tracking.", "params.cv.", "params.evaluation.", "params.split.folds", "params.split.repeats")


def config_keys(runs: pd.DataFrame) -> pd.Series:
    """Each run's config as a comparable value: its params, less what does not change the model it makes
    (tracking, evaluation sets, the CV plan). A train run and a CV run of one config have the same key."""
    params = [c for c in runs.columns if c.startswith("params.") and not c.startswith(CONFIG_FREE)]
    rows = runs[params].to_dict("records")
    keys = [tuple(sorted((c, v) for c, v in row.items() if isinstance(v, str))) for row in rows]
    return pd.Series(keys, index=runs.index, dtype=object)


def dev_only(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs with only a dev score whose config no run of ``runs`` cross-validated: in a field with CV
    scores, the candidates that are not yet comparable."""
    if SCORE_KIND not in runs.columns:
        return runs.iloc[0:0]
    keys = config_keys(runs)
    validated = set(keys[runs[SCORE_KIND] == CV])
    return runs[(runs[SCORE_KIND] == DEV) & ~keys.isin(validated)]


def mixed_field(runs: pd.DataFrame, task: str) -> str:
    """One line on a field where some runs have CV scores and others only dev scores, and how to make
    it comparable."""
    pending = dev_only(runs)
    validated = int((runs[SCORE_KIND] == CV).sum())
    names = ", ".join(str(n) for n in pending.get("tags.mlflow.runName", pending["run_id"]).head(3))
    more = f" and {len(pending) - 3} more" if len(pending) > 3 else ""
    return (
        f"{validated} {task} run{'s' * (validated != 1)} {'have' if validated != 1 else 'has'} CV scores and "
        f"{len(pending)} only dev scores ({names}{more}), which do not compare with CV means; cross-validate "
        f"their configs with `tagger promote --task {task} --cv` (or `tagger cv` on each), "
        "or rank by one metric with --metric dev/f1_macro"
    )


def rank_by_kind(runs: pd.DataFrame) -> pd.DataFrame:
    """Best first by ``validation/f1_macro`` within each kind: the compared kind (``comparable_kind``)
    first, then the other; then higher dev macro F1, then newer."""
    kind = comparable_kind(runs)
    ranked = rank(runs.assign(_kind_order=(runs.get(SCORE_KIND) != kind).astype(int)), VALIDATION_METRIC)
    return ranked.sort_values("_kind_order", kind="stable").drop(columns="_kind_order")


def is_part(runs: pd.DataFrame) -> pd.Series:
    """Runs that log no model of their own: a cross-validation's fold runs, a sweep's parent and trials."""
    part = pd.Series(False, index=runs.index)
    if "tags.tagger.cv" in runs.columns:
        part |= runs["tags.tagger.cv"] == "fold"
    if "tags.tagger.sweep" in runs.columns:
        part |= runs["tags.tagger.sweep"].notna()
    return part


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


def list_runs(
    task: str, metric: str, experiment: str | None = None, limit: int = 20, every_status: bool = False
) -> pd.DataFrame:
    """Finished runs with a model, best first by ``metric`` (then dev macro F1, then newest).

    ``every_status`` lists all runs instead (running, failed, killed, without a model), with their status.
    """
    name = experiment or experiment_name(task)
    frame = all_runs(name, task) if every_status else finished_runs(name, task)
    if frame.empty:
        return pd.DataFrame(columns=["run_id", "run_name", "family", metric])
    column = f"metrics.{metric}"
    if every_status and column not in frame.columns:
        frame[column] = float("nan")
    if column not in frame.columns:
        import difflib

        known = sorted(c.removeprefix("metrics.") for c in frame.columns if c.startswith("metrics."))
        hint = difflib.get_close_matches(metric, known, n=1, cutoff=0.6)
        suggestion = f"did you mean '{hint[0]}'? " if hint else ""
        listed = ", ".join(known[:12])
        raise TaggerError(f"no run logged metric '{metric}'; {suggestion}known metrics include: {listed}")
    like_for_like = metric == VALIDATION_METRIC and SCORE_KIND in frame.columns
    frame = rank_by_kind(frame) if like_for_like else rank(frame, metric)
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
    }
    if SCORE_KIND in frame.columns:  # which kind of validation score each run has: cv or dev
        shown["kind"] = frame[SCORE_KIND]
    if like_for_like:  # the leader of the compared kind, and the runs tied with it within its noise
        shown["tie"] = mark_ties(frame)
    shown |= {
        "dev/f1_macro": frame["metrics.dev/f1_macro"].round(4),
        "started": frame["start_time"].dt.strftime("%Y-%m-%d %H:%M"),
    }
    if metric != "seeds/f1_macro" and "metrics.seeds/f1_macro" in frame.columns:  # the test score, beside
        shown["seeds/f1_macro (test)"] = frame["metrics.seeds/f1_macro"].round(4)
    if "metrics.cv/f1_macro_mean" in frame.columns:  # cross-validated runs: mean ± std over folds
        shown["cv/f1_macro"] = [
            f"{m:.3f} ± {sd:.3f}" if pd.notna(m) else ""
            for m, sd in zip(frame["metrics.cv/f1_macro_mean"], frame["metrics.cv/f1_macro_std"], strict=True)
        ]
    if every_status:
        shown["status"] = frame["status"]
        shown["model"] = ((frame["status"] == "FINISHED") & has_model(frame)).map({True: "yes", False: "no"})
    table = pd.DataFrame(shown).head(limit).reset_index(drop=True)
    if like_for_like and len(dev_only(frame)):
        table.attrs["note"] = mixed_field(frame, task)
    everyone = frame if every_status else all_runs(name, task)  # short ids are unique among all the runs
    table.attrs["known_ids"] = everyone["run_id"].tolist()
    return table


def json_rows(table: pd.DataFrame) -> list[dict]:
    """The rows of a runs table as JSON-ready dicts: a missing value is None (``null``), never NaN."""
    rows = []
    for row in table.astype(object).to_dict(orient="records"):
        clean = {}
        for key, value in row.items():
            if hasattr(value, "item"):  # numpy scalars
                value = value.item()
            if isinstance(value, float) and value != value or value is pd.NaT or value is None:
                value = None
            elif isinstance(value, float) and value in (float("inf"), float("-inf")):
                value = None
            clean[str(key)] = value if value is None or isinstance(value, (str, int, float, bool)) else str(value)
        rows.append(clean)
    return rows


def short_header(column: str) -> str:
    """A column's header in the narrow table: ``validation/f1_macro`` -> ``valid``, ``dev/f1_macro`` -> ``dev``,
    ``validation/f1_macro_ci`` -> ``valid CI``; columns it does not know keep their name."""
    header = {"run_id": "run", "run_name": "name"}.get(column, column)
    header = header.replace("/f1_macro", "").replace("validation", "valid")
    return header[:-3] + " CI" if header.endswith("_ci") else header


NAME_WIDTH = 24  # a run name longer than this is cut in its middle in the narrow table (``--wide``: whole)
GIVE_WAY = ("run_name", "family")  # the columns the narrow table cuts to fit
NARROW_DROPS = ("started",)  # left out of the narrow table (``--wide`` and ``--json`` have them)


def middle_cut(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters in its middle: ``tfidf_logreg-cv5x1-1206-231046`` ->
    ``tfidf_logre…1206-231046``."""
    if len(text) <= width:
        return text
    head = (width - 1) // 2
    return text[:head] + "…" + text[-(width - 1 - head) :]


def four_decimals(table: pd.DataFrame) -> pd.DataFrame:
    """Float columns as text with 4 decimals (``0.8`` -> ``0.8000``), so that scores line up."""
    table = table.copy()
    for column in table.columns:
        if table[column].dtype.kind == "f":
            table[column] = [None if pd.isna(v) else f"{v:.4f}" for v in table[column]]
    return table


def narrow_view(table: pd.DataFrame, known_ids: list[str] | None = None) -> pd.DataFrame:
    """The narrow table's cells: short run ids, each score beside its interval (``X`` and ``X_ci`` in one
    column), no start time. Columns it does not know pass through unchanged."""
    from train.tracking.store import short_ids

    shown = table.drop(columns=[c for c in NARROW_DROPS if c in table.columns])
    if "run_id" in shown.columns and len(shown):
        shown["run_id"] = short_ids(shown["run_id"].astype(str).tolist(), known_ids or shown["run_id"].tolist())
    if "run_name" in shown.columns:  # names end in their time stamp: keep both ends
        shown["run_name"] = [middle_cut(v, NAME_WIDTH) if isinstance(v, str) else v for v in shown["run_name"]]
    shown = four_decimals(shown)
    for column in list(shown.columns):
        companion = f"{column}_ci"
        if companion in shown.columns:
            shown[column] = [
                " ".join(str(part) for part in (value, ci) if not pd.isna(part) and str(part) != "")
                for value, ci in zip(shown[column], shown[companion], strict=True)
            ]
            shown = shown.drop(columns=[companion])
    return shown


def render_table(table: pd.DataFrame, metric: str, width: int | None = None, wide: bool = False) -> None:
    """Print the runs as a table (``width``: the console width, default the terminal's).

    Narrow (the default, fits 100 columns): short headers, each run id cut to its shortest unique prefix
    of at least 8 characters (every command that takes a run id takes it), long run names cut.
    ``wide``: whole ids, names and column names. Columns are rendered generically: any column a caller
    adds is shown, its header shortened by ``short_header``.
    """
    from rich import box
    from rich.console import Console
    from rich.table import Table

    shown = narrow_view(table, table.attrs.get("known_ids")) if not wide else four_decimals(table)
    subject = "macro F1" if metric.endswith("f1_macro") else metric
    title = f"runs by {metric}" if wide else f"runs by {metric} ({subject}; run: id prefix, any command takes it)"
    out = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0))  # columns 2 apart
    for column in shown.columns:
        header = str(column) if wide else short_header(str(column))
        if column in GIVE_WAY and not wide:  # names give way (cut with …) so that the rest fits
            out.add_column(header, overflow="ellipsis", max_width=NAME_WIDTH)
        else:  # ids, scores and headers are never cut or folded
            longest = max([len(header), *(len("" if pd.isna(v) else str(v)) for v in shown[column])])
            was_float = column in table.columns and table[column].dtype.kind == "f"
            right = was_float or str(column).startswith(metric)
            out.add_column(header, justify="right" if right else "left", no_wrap=True, min_width=longest)
    for row in shown.itertuples(index=False):
        out.add_row(*["" if pd.isna(v) else str(v) for v in row])
    # a pipe or CI log gets a wide table instead of one wrapped at 80 columns; --wide is never squeezed
    if wide:
        width = 100_000
    Console(width=width or (None if sys.stdout.isatty() else 200)).print(out)
