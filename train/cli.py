"""The ``tagger`` command line. User errors print one line and exit with status 2."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from train import __version__
from train.errors import TaggerError
from train.runtime import quiet_libraries

log = logging.getLogger("tagger")


BACKEND_CHOICES = ("auto", "torch", "onnx", "onnx-int8")
BACKEND_HELP = (
    "Inference backend of transformer models; auto: the fastest that agreed with torch on >= 99% of "
    "sentences when trained"
)


def backend_options(default: str | None = None):
    """``--backend`` and ``--force-backend``, shared by every command that loads models."""

    def decorate(command):
        command = click.option(
            "--force-backend",
            is_flag=True,
            help="Use --backend even though it agreed with torch on < 99% of sentences when trained.",
        )(command)
        help_text = BACKEND_HELP + (" (default)." if default else "; default: the one the config names.")
        return click.option("--backend", default=default, type=click.Choice(BACKEND_CHOICES), help=help_text)(command)

    return decorate


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="tagger")
@click.option("-v", "--verbose", is_flag=True, help="Show debug logging.")
def cli(verbose: bool) -> None:
    """Train, evaluate and compare news-sentence taggers (topic and stance), tracked in MLflow."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)-7s %(message)s",
        datefmt="%H:%M:%S",
    )
    quiet_libraries(verbose)  # -v also lets MLflow's own messages through


@cli.command()
@click.argument("config_path", metavar="CONFIG", type=click.Path(dir_okay=False))
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config value, e.g. --set model.params.C=2.0 (repeatable).",
)
def train(config_path: str, overrides: tuple[str, ...]) -> None:
    """Train and evaluate the experiment in CONFIG; log it as an MLflow run."""
    from train.config import load_config

    config = load_config(config_path, list(overrides))  # config errors surface before the heavy imports
    from train.training.pipeline import train as run_training

    click.echo(run_training(config, config_path=config_path))


@cli.command()
@click.argument("config_path", metavar="CONFIG", type=click.Path(dir_okay=False))
@click.option("--folds", default=None, type=click.IntRange(2, 50), help="Folds (default: split.folds, 5).")
@click.option("--repeats", default=None, type=click.IntRange(1, 20), help="Repeats with other fold seeds (default 1).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config value (repeatable).")
def cv(config_path: str, folds: int | None, repeats: int | None, overrides: tuple[str, ...]) -> None:
    """Cross-validate CONFIG: a parent MLflow run, a nested run per fold, and a final model; prints the parent id."""
    from train.config import load_config

    config = load_config(config_path, list(overrides))
    from train.training.cv import cross_validate

    click.echo(cross_validate(config, config_path=config_path, folds=folds, repeats=repeats))


@cli.command()
@click.argument("config_path", metavar="CONFIG", type=click.Path(dir_okay=False))
@click.option("--space", "space_path", required=True, type=click.Path(dir_okay=False), help="Search space (YAML).")
@click.option(
    "--trials", required=True, type=click.IntRange(1), help="Size of the study (a resumed study grows to it)."
)
@click.option("--jobs", default=1, show_default=True, type=click.IntRange(1, 64), help="Worker processes.")
@click.option("--storage", default=None, help="Optuna RDB URL (default: sqlite:///optuna.db beside mlflow.db).")
@click.option(
    "--study", "study_name", default=None, help="Study name; the same name resumes (default: <task>-<config>)."
)
@click.option("--objective", default=None, help="CV metric to optimise (default: the space's, else cv/f1_macro_mean).")
@click.option(
    "--out", default=None, type=click.Path(file_okay=False), help="Folder for best.yaml (default sweeps/<study>)."
)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config value (repeatable).")
def sweep(config_path, space_path, trials, jobs, storage, study_name, objective, out, overrides) -> None:
    """Search CONFIG's SPACE with Optuna, each trial a cross-validation; writes best.yaml."""
    from train.config import load_config

    config = load_config(config_path, list(overrides))
    from train.training.sweep import SweepOptions
    from train.training.sweep import sweep as run_sweep

    options = SweepOptions(space_path, trials, jobs, storage, study_name, objective, out, tuple(overrides))
    result = run_sweep(config, config_path=config_path, options=options)
    click.echo(result.describe())


@cli.command()
@click.argument("model")
@click.option("--input", "source", required=True, help="JSON Lines file (or '-' for stdin) of sentences.")
@click.option("--target", default=None, help='Stance target for lines without one (default "closer Iran–Iraq ties").')
@backend_options()
@click.option(
    "--adjust-priors",
    is_flag=True,
    help="Re-estimate the label priors on these sentences (EM) and adjust the scores; priors go to stderr.",
)
def predict(
    model: str, source: str, target: str | None, backend: str | None, force_backend: bool, adjust_priors: bool
) -> None:
    """Tag sentences with MODEL (run id, models:/ or runs:/ URI, or model folder, incl. the combined
    topic + stance model); JSON Lines out."""
    from train.domain import DEFAULT_TARGET
    from train.inputs import read_sentences
    from train.outputs import json_lines, paused_gc
    from train.tracking.packaging import model_uri, predict_records

    if target is not None and not target.strip():
        raise TaggerError("--target is empty")
    model_uri(model)  # a malformed or refused reference fails before the input is read
    with paused_gc():  # one dict per sentence in and out: no cycles to collect
        rows, priors = predict_records(
            model, read_sentences(source), target or DEFAULT_TARGET, backend, adjust_priors, force_backend
        )
        output = json_lines(rows)
    for task_type, report in priors.items():
        shifts = ", ".join(f"{label} {tuned:.3f} -> {batch:.3f}" for label, (tuned, batch) in report.items())
        log.info("label priors of the %s model (tuned -> this batch of %d): %s", task_type, len(rows), shifts)
    sys.stdout.flush()
    sys.stdout.buffer.write(output)  # one write, not one flushed echo per row


@cli.command()
@click.argument("model")
@click.option(
    "--data",
    "data_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="Labelled file (JSONL/CSV/Parquet) in the project's schema.",
)
@click.option("--labels-column", default=None, help="Column with gold labels (default: topics or stance).")
@click.option("--output", type=click.Path(dir_okay=False), default=None, help="Write metrics JSON here.")
@click.option(
    "--report-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Also write predictions, misclassified rows and confusion plots here.",
)
@backend_options()
def evaluate(
    model: str,
    data_path: str,
    labels_column: str | None,
    output: str | None,
    report_dir: str | None,
    backend: str | None,
    force_backend: bool,
) -> None:
    """Evaluate MODEL on a labelled file and print its metrics (rounded to 4 decimals)."""
    from train.evaluation.evaluate import evaluate_model
    from train.inputs import check_user_file, check_writable_file, check_writable_folder, write_text_file

    check_user_file(data_path, "data file")  # before the model is loaded
    if output:
        check_writable_file(output, "--output")
    if report_dir:
        check_writable_folder(report_dir, "--report-dir")
    report, result = evaluate_model(model, Path(data_path), labels_column, backend, force_backend)
    for warning in result.warnings:
        log.warning(warning)
    text = json.dumps(report, indent=2)
    if output:
        write_text_file(output, text + "\n", "--output")
    if report_dir:
        try:
            result.write(Path(report_dir))
        except OSError as exc:
            raise TaggerError(f"--report-dir {report_dir}: cannot write the report ({exc.strerror})") from None
    click.echo(text)


@cli.command()
@click.option("--task", required=True, help="Task name, e.g. topic or stance.")
@click.option(
    "--metric",
    default="validation/f1_macro",
    show_default=True,
    help="Metric to sort by (validation/f1_macro: CV mean where a run has one, else dev).",
)
@click.option("--experiment", default=None, help="Experiment name (default: tagger-<task>).")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1), help="How many runs to show.")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines instead of a table (whole ids; null for missing).")
@click.option(
    "--all", "every_status", is_flag=True, help="Also runs that are running, failed, killed or have no model."
)
@click.option("--wide", is_flag=True, help="Whole run ids, names and column names (the table is wider than 100).")
def runs(
    task: str, metric: str, experiment: str | None, limit: int, as_json: bool, every_status: bool, wide: bool
) -> None:
    """List a task's finished runs that logged a model, best first by METRIC (--all: every run, with status).

    Run ids are shown as their shortest unique prefix (8 characters or more); every command that takes
    a run id takes that prefix too.
    """
    from train.tracking.runs import json_rows, list_runs, render_table

    table = list_runs(task, metric, experiment, limit, every_status)
    if "note" in table.attrs:  # a field of CV and dev-only scores: how to make it comparable
        click.echo(f"note: {table.attrs['note']}", err=True)
    if as_json:
        for row in json_rows(table):
            click.echo(json.dumps(row, allow_nan=False, ensure_ascii=False))
    else:
        render_table(table, metric, wide=wide)


@cli.command()
@click.argument("run_a")
@click.argument("run_b")
@click.option("--set", "set_name", default="seeds", show_default=True, help="Evaluation set both runs were scored on.")
@click.option("--metric", default="f1_macro", show_default=True, help="Headline metric to compare.")
@click.option(
    "--samples", default=10_000, show_default=True, type=click.IntRange(100, 1_000_000), help="Bootstrap resamples."
)
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
def compare(run_a: str, run_b: str, set_name: str, metric: str, samples: int, as_json: bool) -> None:
    """Paired comparison of RUN_B against RUN_A (run ids or unique prefixes) on one evaluation set:
    difference, interval, p-value. The first lines name A and B (id, run name, family)."""
    from train.evaluation.compare import compare_runs, render_comparison

    result = compare_runs(run_a, run_b, set_name, metric, samples)
    click.echo(json.dumps(result.to_dict(), indent=2) if as_json else render_comparison(result))


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (loopback by default).")
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535), envvar="UI_PORT")
@click.option("--top", default=5, show_default=True, type=click.IntRange(2, 50), help="Runs in each compare link.")
def ui(host: str, port: int, top: int) -> None:
    """Start the MLflow UI on the store and print links that open each experiment's runs, ranked.

    Per experiment and kind of score (cross-validated, single-split): the runs table sorted by the
    validation metric with the headline columns, its charts, and a side-by-side compare of the top
    runs. With an http(s) MLFLOW_TRACKING_URI it only prints the links to that server's UI.
    """
    from train.tracking.ui import ui as run_ui

    run_ui(host, port, top, click.echo)


@cli.command("split-seeds")
@click.option(
    "--seeds",
    "seeds_dir",
    default="seeds",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder of article .txt files.",
)
@click.option("--output", default="-", show_default=True, help="Where to write sentences (JSONL); '-' = stdout.")
def split_seeds(seeds_dir: str, output: str) -> None:
    """Split the seed articles into sentences (id, doc_id, index, offsets, text)."""
    from train.data.sentences import split_files
    from train.inputs import check_writable_file, write_text_file

    if output != "-":
        check_writable_file(output, "--output")
    paths = sorted(Path(seeds_dir).glob("*.txt"))
    if not paths:
        raise TaggerError(f"{seeds_dir}: no .txt articles found")
    lines = []
    for sentences, dropped in split_files(paths):
        for d in dropped:
            log.info("dropped boilerplate: %s line %d: %r", d.doc_id, d.line, d.text)
        lines.extend(json.dumps(s.to_dict(), ensure_ascii=False) for s in sentences)
    text = "\n".join(lines) + "\n"
    if output == "-":
        click.echo(text, nl=False)
    else:
        write_text_file(output, text, "--output")
        log.info("wrote %d sentences from %d articles to %s", len(lines), len(paths), output)


@cli.command()
@click.option("--task", required=True, type=click.Choice(["topic", "stance"]), help="Which task to promote.")
@click.option(
    "--metric",
    default="validation/f1_macro",
    show_default=True,
    help="Metric that picks the winner (default: CV mean where a run has one, else dev; seeds are a test set).",
)
@click.option("--dry-run", is_flag=True, help="Show the choice; change nothing.")
@click.option("--rollback", is_flag=True, help="Swap 'champion' and 'previous' instead (undo the last promotion).")
@click.option(
    "--cv",
    "cross_validate",
    is_flag=True,
    help="First cross-validate the configs of runs that have only a dev score, then compare CV with CV.",
)
def promote(task: str, metric: str, dry_run: bool, rollback: bool, cross_validate: bool) -> None:
    """Register the best finished run of TASK as tagger-TASK and move the 'champion' alias to it.

    Runs are compared by one kind of validation score: CV means among cross-validated runs, else dev
    scores. Where some runs have CV scores and others only dev scores, promote stops and says so;
    --cv cross-validates the latter first. Runs within the winner's noise are reported as ties.
    """
    from train.domain import registered_name
    from train.tracking.promote import cross_validate_dev_only, register_bundle
    from train.tracking.promote import promote as run_promote
    from train.tracking.promote import rollback as run_rollback

    if rollback:
        champion, previous = run_rollback(task, dry_run)
        verb = "would be" if dry_run else "is now"
        click.echo(f"{registered_name(task)} v{champion} {verb} @champion, v{previous} @previous")
    else:
        if cross_validate:
            for run_id in cross_validate_dev_only(task):
                click.echo(f"cross-validated: run {run_id}")
        choice, version, changed = run_promote(task, metric, dry_run)
        click.echo(choice.describe())
        if dry_run:
            click.echo("dry run: nothing registered")
            return
        state = "is now" if changed else "is already"
        click.echo(f"{registered_name(task)} v{version} {state} @champion")
    if not dry_run and (bundle := register_bundle()):
        version, changed = bundle
        click.echo(f"tagger (topic + stance) v{version} {'is now' if changed else 'is already'} @champion")


@cli.command()
@click.argument("text", required=False)
@click.option("--input", "source", default=None, help="Read the text from a file ('-' = stdin) instead.")
@click.option("--target", default=None, help='Stance target (default "closer Iran–Iraq ties").')
@click.option("--topic-model", default=None, help="Topic model URI (default models:/tagger-topic@champion).")
@click.option("--stance-model", default=None, help="Stance model URI (default models:/tagger-stance@champion).")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines, one sentence per line.")
@click.option("--explain", is_flag=True, help="Show the words that pushed each label up and down ('explanation').")
@click.option("--top-k", default=5, show_default=True, type=click.IntRange(1, 50), help="--explain: words each way.")
@backend_options()
def tag(text, source, target, topic_model, stance_model, as_json, explain, top_k, backend, force_backend) -> None:
    """Split TEXT (or --input) into sentences and tag each with topics and stance."""
    from train.domain import DEFAULT_TARGET
    from train.inputs import read_source
    from train.serving.tagger import Tagger

    if (text is None) == (source is None):
        raise TaggerError("give the text as an argument or with --input FILE, not both")
    if source is not None:
        text, _ = read_source(source)
    if not text.strip():
        raise TaggerError("the text is empty")
    if target is not None and not target.strip():
        raise TaggerError("--target is empty")
    tagger = Tagger.load(topic_model, stance_model, backend, force_backend)
    results = tagger.tag_text(text, target or DEFAULT_TARGET)
    if explain:
        stances = [[row["stance"]] for row in results]
        explained = tagger.explain_sentences(results, target or DEFAULT_TARGET, top_k, stances)
        for row, explanation in zip(results, explained, strict=True):
            row["explanation"] = explanation
    if as_json:
        from train.outputs import json_lines

        sys.stdout.flush()
        sys.stdout.buffer.write(json_lines(results))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"stance toward: {target or DEFAULT_TARGET}", show_lines=True)
    for column in ("#", "sentence", "topics", "stance", *(["why (+ up, - down)"] if explain else [])):
        table.add_column(column)
    for row in results:
        topics = ", ".join(f"{t} {row['topic_scores'][t]:.2f}" for t in row["topics"]) or "-"
        stance = f"{row['stance']} {row['stance_scores'][row['stance']]:.2f}"
        table.add_row(str(row["index"]), row["text"], topics, stance, *([explained_words(row)] if explain else []))
    Console(width=None if sys.stdout.isatty() else 160).print(table)


def explained_words(row: dict) -> str:
    """One line per tagged label: ``label: +word +word -word`` (the words that pushed it up, then down)."""
    lines = []
    for task, names in (("topic", row["topics"]), ("stance", [row["stance"]])):
        for name in names:
            found = row["explanation"][task]["labels"][name]
            words = [f"+{w['word']}" for w in found["up"]] + [f"-{w['word']}" for w in found["down"]]
            lines.append(f"{name}: {' '.join(words) or '(none)'}")
    return "\n".join(lines)


@cli.command("tag-batch")
@click.argument("source", metavar="INPUT", type=click.Path())
@click.argument("output", metavar="OUTPUT", type=click.Path())
@click.option("--engine", default="local", show_default=True, type=click.Choice(["local", "spark"]))
@click.option("--master", default=None, help="Spark master, e.g. local[2] or spark://host:7077 (default local[*]).")
@click.option("--model", default="models:/tagger@champion", show_default=True, help="Model URI, run id or folder.")
@click.option("--text-column", default="text", show_default=True)
@click.option("--target-column", default="target", show_default=True, help="Used where present and not empty.")
@click.option("--target", default=None, help='Target for rows without one (default "closer Iran–Iraq ties").')
@click.option("--chunk-size", default=20_000, show_default=True, type=click.IntRange(1), help="Rows per local chunk.")
@click.option("--workers", default=None, type=click.IntRange(1, 256), help="Local worker processes (default: CPUs).")
def tag_batch(source, output, engine, master, model, text_column, target_column, target, chunk_size, workers) -> None:
    """Tag INPUT (Parquet, JSONL or CSV; a file or a folder of parts) into the Parquet folder OUTPUT."""
    from train.batch import BatchJob, tag_local, tag_spark
    from train.domain import DEFAULT_TARGET

    if engine == "local" and master:
        raise TaggerError("--master applies to --engine spark only")
    if engine == "spark" and workers:
        raise TaggerError("--workers applies to --engine local only (Spark's master sets its parallelism)")
    job = BatchJob(Path(source), Path(output), text_column, target_column, target or DEFAULT_TARGET, model, chunk_size)
    result = tag_spark(job, master) if engine == "spark" else tag_local(job, workers)
    if "startup_seconds" in result:
        log.info("Spark started in %.1f s", result["startup_seconds"])
    rate = result["rows"] / result["seconds"] if result["seconds"] else float("nan")
    log.info(
        "tagged %d sentences in %.1f s (%.0f sentences/s) with %s", result["rows"], result["seconds"], rate, engine
    )
    click.echo(result["output"])


@cli.command()
@click.option(
    "--task",
    required=True,
    type=click.Choice(["topic", "stance", "tagger"]),
    help="Registered model to export (tagger = topic + stance).",
)
@click.option("--alias", default="champion", show_default=True)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder to write (must not exist).")
def export(task: str, alias: str, out: str) -> None:
    """Write a self-contained MLflow model folder that 'tagger serve' and 'mlflow' load without the registry."""
    from train.domain import registered_name
    from train.inputs import check_writable_folder
    from train.tracking.packaging import export_model

    check_writable_folder(out, "--out")
    click.echo(str(export_model(registered_name(task), alias, Path(out))))


@cli.command()
@click.argument("model")
@click.option("--out", type=click.Path(file_okay=False), help="New folder, when MODEL is a local model folder.")
def migrate(model: str, out: str | None) -> None:
    """Re-log a pickled model of an older tagger in the data format (run id, runs:/, models:/name@alias, or folder)."""
    from train.tracking.migrate import migrate_model

    click.echo(migrate_model(model, Path(out) if out else None))


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (loopback by default).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--topic-model", default=None, help="Topic model URI or folder (default: the champion).")
@click.option("--stance-model", default=None, help="Stance model URI or folder (default: the champion).")
@click.option("--max-body-bytes", default=1_000_000, show_default=True, type=click.IntRange(1))
@click.option("--max-sentences", default=1_000, show_default=True, type=click.IntRange(1))
@click.option(
    "--request-timeout",
    default=30.0,
    show_default=True,
    type=click.FloatRange(0.1),
    help="Seconds one request may take (body, splitting, tagging); 503 after that.",
)
@click.option(
    "--admin-token-file",
    default=None,
    type=click.Path(dir_okay=False),
    help="File holding the bearer token for /v1/admin/* (else $TAGGER_ADMIN_TOKEN; neither: admin disabled).",
)
@click.option(
    "--admin-origin",
    multiple=True,
    help="Web origin (scheme://host[:port]) allowed to call /v1/admin/* from a browser; repeatable (default: none).",
)
@click.option(
    "--header-timeout",
    default=10.0,
    show_default=True,
    type=click.FloatRange(0.1, 3600),
    help="Seconds a connection has to send a request's headers; then 408 and closed.",
)
@click.option(
    "--keep-alive-timeout",
    default=15.0,
    show_default=True,
    type=click.FloatRange(0.1, 3600),
    help="Seconds an idle kept-alive connection stays open.",
)
@click.option(
    "--max-connections",
    default=1000,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Open connections at most; one more is answered 503 and closed.",
)
@click.option(
    "--log-text",
    is_flag=True,
    help="Put the tagged sentences in the JSON access log (stderr); by default it has no text.",
)
@click.option(
    "--drift-window",
    default=1000,
    show_default=True,
    type=click.IntRange(100, 1_000_000),
    help="Sentences in the window whose label priors GET /v1/drift re-estimates (EM) and compares with training's.",
)
@click.option(
    "--drift-max-age",
    default=3600.0,
    show_default=True,
    type=click.FloatRange(1.0),
    help="Seconds a sentence stays in the drift window at most.",
)
@click.option(
    "--drift-threshold",
    default=0.15,
    show_default=True,
    type=click.FloatRange(0.0, 1.0, min_open=True),
    help="Divergence (total variation of the label priors) over which a task's drift alarm is on.",
)
@click.option(
    "--adjust-priors",
    "adjust_priors",
    default="off",
    show_default=True,
    type=click.Choice(["off", "live"]),
    help="live: adjust each decision to the label priors of the drift window (as predict --adjust-priors does).",
)
@backend_options(default="auto")
def serve(
    host,
    port,
    topic_model,
    stance_model,
    max_body_bytes,
    max_sentences,
    request_timeout,
    admin_token_file,
    admin_origin,
    header_timeout,
    keep_alive_timeout,
    max_connections,
    log_text,
    drift_window,
    drift_max_age,
    drift_threshold,
    adjust_priors,
    backend,
    force_backend,
) -> None:
    """Serve tagging over HTTP (FastAPI + uvicorn): POST /v1/tag, /healthz, /readyz, /v1/models, /metrics, page at /."""
    from train.inputs import read_admin_token
    from train.serving.app import create_app, listen, run_server
    from train.serving.drift import DriftSettings
    from train.serving.tagger import Tagger

    admin_token = read_admin_token(admin_token_file)
    sock = listen(host, port)  # a port in use fails now, before the models load
    if not is_loopback(host):
        log.warning(
            "serving on %s: reachable from other machines; the service has no authentication for /v1/tag "
            "(put it behind a proxy that has)",
            host,
        )
    app = create_app(
        lambda: Tagger.load(topic_model, stance_model, backend, force_backend),
        max_body_bytes=max_body_bytes,
        max_sentences=max_sentences,
        request_timeout=request_timeout,
        admin_token=admin_token,
        admin_origin=admin_origin,
        log_text=log_text,
        drift=DriftSettings(drift_window, drift_max_age, drift_threshold, live=adjust_priors == "live"),
    )
    if admin_token is None:
        log.info("admin endpoints disabled (set TAGGER_ADMIN_TOKEN or --admin-token-file to enable reload)")
    log.info("serving on http://%s:%d (docs at /docs)", host if ":" not in host else f"[{host}]", port)
    run_server(
        app,
        sock,
        header_timeout=header_timeout,
        keep_alive_timeout=keep_alive_timeout,
        max_connections=max_connections,
    )


@cli.command()
@click.argument("model")
@click.option("--pool", "pool_path", required=True, type=click.Path(dir_okay=False), help="Unlabelled sentences.")
@click.option("--n", "count", required=True, type=click.IntRange(1, 1_000_000), help="How many to choose.")
@click.option(
    "--strategy",
    default="mixed",
    show_default=True,
    type=click.Choice(["uncertainty", "diverse", "mixed", "random"]),
    help="uncertainty: nearest the decision; diverse: spread out (k-center); mixed: uncertain, then spread out.",
)
@click.option("--per-article", default=3, show_default=True, type=click.IntRange(0), help="Cap per article (0: none).")
@click.option("--seed", default=13, show_default=True, type=click.IntRange(0, 2**32 - 1))
@click.option("--out", default="-", show_default=True, help="Where to write the batch; '-' = stdout.")
@click.option("--format", "fmt", default="jsonl", show_default=True, type=click.Choice(["jsonl", "label-studio"]))
@click.option("--label-config", default=None, help="Also write the Label Studio labeling config (XML) here.")
@click.option("--target", default=None, help='Stance target for rows without one (default "closer Iran–Iraq ties").')
@click.option("--group-column", default="doc_id", show_default=True, help="The pool's article column.")
@click.option(
    "--exclude", multiple=True, type=click.Path(dir_okay=False), help="Skip sentences in this file (repeatable)."
)
@backend_options()
def select(
    model,
    pool_path,
    count,
    strategy,
    per_article,
    seed,
    out,
    fmt,
    label_config,
    target,
    group_column,
    exclude,
    backend,
    force_backend,
) -> None:
    """Choose the pool sentences worth labelling next with MODEL, its labels filled in as suggestions."""
    from train.inputs import check_writable_file, write_text_file
    from train.selection.labelstudio import label_config as config_xml
    from train.selection.labelstudio import tasks_json
    from train.selection.select import select as run_select
    from train.selection.select import selection_jsonl

    if target is not None and not target.strip():
        raise TaggerError("--target is empty")
    for path, option in ((out, "--out"), (label_config, "--label-config")):
        if path and path != "-":
            check_writable_file(path, option)
    chosen = run_select(
        model,
        Path(pool_path),
        count,
        strategy,
        seed,
        per_article,
        target,
        group_column,
        tuple(Path(p) for p in exclude),
        backend,
        force_backend,
    )
    text = tasks_json(chosen.rows) if fmt == "label-studio" else selection_jsonl(chosen)
    if label_config:
        write_text_file(label_config, config_xml(), "--label-config")
    mean = sum(r["selection"]["uncertainty"] for r in chosen.rows) / max(len(chosen.rows), 1)
    log.info(
        "chose %d of %d pool sentences by %s (mean uncertainty %.3f; pool %.3f)",
        len(chosen.rows),
        chosen.pool_size,
        strategy,
        mean,
        chosen.pool_uncertainty,
    )
    if out == "-":
        click.echo(text, nl=False)
    else:
        write_text_file(out, text, "--out")


@cli.command("import-labels")
@click.argument("export_path", metavar="EXPORT.json", type=click.Path(dir_okay=False))
@click.option("--out", required=True, help="JSONL to write in the project's schema; '-' = stdout.")
def import_labels(export_path: str, out: str) -> None:
    """Turn a Label Studio JSON export into the project's schema (id, doc_id, text, target, topics, stance)."""
    from train.inputs import check_writable_file, write_text_file
    from train.selection.labelstudio import import_labels as run_import
    from train.selection.labelstudio import labels_jsonl

    if out != "-":
        check_writable_file(out, "--out")
    rows, counts = run_import(Path(export_path))
    log.info(
        "imported %d labelled sentences; skipped %d tasks without a submitted annotation; "
        "%d tasks whose annotators disagreed (kept the ground-truth or latest one); %d without a target (default used)",
        len(rows),
        counts["unlabelled"],
        counts["disagreements"],
        counts["default_target"],
    )
    if out == "-":
        click.echo(labels_jsonl(rows), nl=False)
    else:
        write_text_file(out, labels_jsonl(rows), "--out")


def is_loopback(host: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def one_line(message: str) -> str:
    """A message folded onto one line (library errors often span several)."""
    return " ".join(part.strip() for part in str(message).splitlines() if part.strip())


def main() -> None:
    """Entry point: run the CLI; a user error is one line on stderr (``error: ...``) and exit status 2."""
    from train.processes import private_tempdir

    with private_tempdir():  # temporary files of this command go with it (after kill -9: with the next command)
        _run()


def _run() -> None:
    try:
        cli.main(standalone_mode=False)
    except TaggerError as exc:
        click.echo(f"error: {one_line(exc)}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        ctx = getattr(exc, "ctx", None)
        command = f"tagger {ctx.info_name}: " if ctx is not None and ctx.parent is not None else ""
        click.echo(f"error: {command}{one_line(exc.format_message())}", err=True)
        sys.exit(2)
    except Exception as exc:
        from train.tracking.store import lost_store_message

        message = lost_store_message(exc)
        if message is None:
            raise
        click.echo(f"error: {message}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
