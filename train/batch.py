"""``tagger tag-batch``: tag a whole file (or folder of parts) of sentences into Parquet, locally or on Spark.

Both engines run the same MLflow pyfunc model (by default the combined ``models:/tagger@champion``):
- ``local`` reads the input in chunks, tags them in worker processes (one per usable CPU; the TF-IDF
  fast path) and appends them in order to one Parquet file, so memory stays bounded whatever the input;
- ``spark`` reads the input as a Spark DataFrame and tags it with ``mlflow.pyfunc.spark_udf`` on any
  master (``local[2]``, ``spark://host:7077``, or the one ``spark-submit`` sets).
The output folder holds Parquet parts: every input column, then the model's output columns.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from train.domain import DEFAULT_TARGET, TARGET_COLUMN, TEXT_COLUMN
from train.errors import TaggerError

log = logging.getLogger("tagger")

FORMATS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}
DEFAULT_MODEL = "models:/tagger@champion"


@dataclass(frozen=True)
class BatchJob:
    """What to tag and how: input and output paths, columns, default target and model."""

    source: Path
    output: Path
    text_column: str = TEXT_COLUMN
    target_column: str = TARGET_COLUMN
    default_target: str = DEFAULT_TARGET
    model: str = DEFAULT_MODEL
    chunk_size: int = 20_000

    @property
    def files(self) -> list[Path]:
        if self.source.is_dir():
            return sorted(p for p in self.source.iterdir() if p.suffix.lower() in FORMATS and p.is_file())
        return [self.source]

    @property
    def format(self) -> str:
        return FORMATS[self.files[0].suffix.lower()]


def check_job(job: BatchJob) -> None:
    """Refuse a missing or mixed input and an output folder that holds anything, before any work."""
    if not job.source.exists():
        raise TaggerError(f"{job.source}: no such file or folder")
    files = job.files
    if not files:
        raise TaggerError(f"{job.source}: no .parquet, .jsonl or .csv parts in this folder")
    suffixes = {p.suffix.lower() for p in files}
    unknown = suffixes - set(FORMATS)
    if unknown:
        raise TaggerError(f"{job.source}: unknown input format '{unknown.pop()}' (use .parquet, .jsonl or .csv)")
    if len({FORMATS[s] for s in suffixes}) > 1:
        raise TaggerError(f"{job.source}: parts of several formats ({', '.join(sorted(suffixes))})")
    if job.output.exists() and (not job.output.is_dir() or any(job.output.iterdir())):
        raise TaggerError(f"{job.output}: exists and is not an empty folder")
    if job.chunk_size < 1:
        raise TaggerError("--chunk-size must be at least 1")


def read_chunks(job: BatchJob) -> Iterator[pd.DataFrame]:
    """The input, ``chunk_size`` rows at a time (Parquet by record batches, JSONL and CSV by pandas chunks)."""
    for path in job.files:
        if job.format == "parquet":
            import pyarrow.parquet as pq

            for batch in pq.ParquetFile(path).iter_batches(batch_size=job.chunk_size):
                yield batch.to_pandas()
        elif job.format == "json":
            yield from pd.read_json(path, lines=True, chunksize=job.chunk_size, dtype=False)
        else:
            yield from pd.read_csv(path, chunksize=job.chunk_size, dtype=str, keep_default_na=False)


def count_rows(job: BatchJob) -> int | None:
    """Rows in the input, for the progress bar (Parquet metadata, or lines of JSONL and CSV)."""
    total = 0
    for path in job.files:
        if job.format == "parquet":
            import pyarrow.parquet as pq

            total += pq.ParquetFile(path).metadata.num_rows
        else:
            with open(path, "rb") as handle:
                total += sum(1 for line in handle if line.strip()) - (job.format == "csv")
    return total


def model_frame(job: BatchJob, chunk: pd.DataFrame) -> pd.DataFrame:
    """The model's input columns: ``text``, and ``target`` (the default where the input has none)."""
    if job.text_column not in chunk.columns:
        raise TaggerError(
            f"{job.source}: no column '{job.text_column}' (columns: {', '.join(map(str, chunk.columns))})"
        )
    frame = pd.DataFrame({TEXT_COLUMN: chunk[job.text_column].fillna("").astype(str)})
    if job.target_column in chunk.columns:
        frame[TARGET_COLUMN] = chunk[job.target_column].fillna(job.default_target).astype(str)
        frame.loc[frame[TARGET_COLUMN].str.strip() == "", TARGET_COLUMN] = job.default_target
    else:
        frame[TARGET_COLUMN] = job.default_target
    return frame


def renamed_inputs(inputs: list[str], outputs: list[str]) -> dict[str, str]:
    """Input columns that an output column would shadow (e.g. the gold ``topics`` of a labelled file) get ``_input``."""
    return {name: f"{name}_input" for name in inputs if name in outputs}


def load_model(reference: str):
    """The pyfunc model behind a reference (run id, ``models:/``, ``runs:/`` or folder), as ``tagger predict`` takes."""
    from train.tracking import store
    from train.tracking.packaging import load_pyfunc, model_uri

    store.setup()
    uri = model_uri(reference)
    try:
        return uri, load_pyfunc(uri)
    except Exception as exc:  # noqa: BLE001 - MLflow raises several types for a bad reference
        hint = " (run 'tagger promote' for both tasks first)" if reference == DEFAULT_MODEL else ""
        raise TaggerError(f"model '{reference}': cannot load ({type(exc).__name__}: {exc}){hint}") from None


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask), as the default number of local workers."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


_WORKER_MODEL = None


def _load_worker_model(folder: str) -> None:
    global _WORKER_MODEL
    from train.tracking.packaging import load_pyfunc

    _WORKER_MODEL = load_pyfunc(folder)


def _tag_chunk(frame: pd.DataFrame) -> pd.DataFrame:
    return _WORKER_MODEL.predict(frame)


def tagged_chunks(job: BatchJob, uri: str, model, workers: int) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
    """(input chunk, model output) in input order; ``workers`` processes tag chunks side by side.

    ``model`` (loaded from ``uri``) tags in this process when ``workers`` is 1; otherwise each worker loads
    it once from a local copy; at most two chunks per worker are in flight,
    so memory stays bounded whatever the input size.
    """
    import tempfile
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    import mlflow

    if workers == 1:
        for chunk in read_chunks(job):
            yield chunk, model.predict(model_frame(job, chunk))
        return
    with tempfile.TemporaryDirectory(prefix="tagger-batch-model-") as folder:
        local = (
            mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=folder)
            if "://" in uri or ":/" in uri
            else uri
        )
        pool = ProcessPoolExecutor(
            workers, mp_context=get_context("spawn"), initializer=_load_worker_model, initargs=(local,)
        )
        with pool:
            pending: deque = deque()
            for chunk in read_chunks(job):
                pending.append((chunk, pool.submit(_tag_chunk, model_frame(job, chunk))))
                if len(pending) >= 2 * workers:
                    done, future = pending.popleft()
                    yield done, future.result()
            while pending:
                done, future = pending.popleft()
                yield done, future.result()


def tag_local(job: BatchJob, workers: int | None = None) -> dict:
    """Tag chunk by chunk in this machine's processes; one Parquet file with a row group per chunk."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    check_job(job)
    workers = workers or usable_cpus()
    uri, model = load_model(job.model)  # a broken reference fails before any output exists
    job.output.mkdir(parents=True, exist_ok=True)
    part = job.output / "part-00000.parquet"
    writer, rows, start = None, 0, time.perf_counter()
    total = count_rows(job)
    columns = [TextColumn("tagging"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    try:
        with Progress(*columns, disable=not sys.stderr.isatty(), transient=True) as progress:
            bar = progress.add_task("tagging", total=total)
            for chunk, tagged in tagged_chunks(job, uri, model, workers):
                tagged = tagged.set_index(chunk.index)
                chunk = chunk.rename(columns=renamed_inputs(list(chunk.columns), list(tagged.columns)))
                table = pa.Table.from_pandas(pd.concat([chunk, tagged], axis=1), preserve_index=False)
                if writer is None:
                    writer = pq.ParquetWriter(part, table.schema)
                writer.write_table(table.cast(writer.schema))
                rows += len(chunk)
                progress.update(bar, advance=len(chunk))
                if not sys.stderr.isatty():
                    log.info("tagged %d of %s sentences", rows, total)
    except BaseException:
        shutil.rmtree(job.output, ignore_errors=True)  # no half-written output
        raise
    finally:
        if writer is not None:
            writer.close()
    seconds = time.perf_counter() - start
    return {"engine": "local", "workers": workers, "rows": rows, "seconds": seconds, "output": str(job.output)}


def spark_session(master: str | None):
    """A Spark session; a clear error names what is missing (the ``spark`` extra, or Java)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise TaggerError("--engine spark needs PySpark: pip install -e '.[spark]'") from None
    if not (shutil.which("java") or os.environ.get("JAVA_HOME")):
        raise TaggerError("--engine spark needs Java: install a JRE (Debian: apt-get install default-jre-headless)")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # workers run this environment, which has tagger
    builder = SparkSession.builder.appName("tagger tag-batch").config("spark.ui.showConsoleProgress", "false")
    if not master and "PYSPARK_GATEWAY_PORT" not in os.environ:  # under spark-submit its --master holds
        master = os.environ.get("SPARK_MASTER", "local[*]")
    if master:
        builder = builder.master(master)
    if master and master.startswith("local"):  # everything on this machine: stay on loopback
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        builder = builder.config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
        builder = builder.config("spark.ui.enabled", "false")
    return builder.getOrCreate()


SPARK_TYPES = {"string": "string", "double": "double", "float": "float", "long": "bigint", "integer": "int"}
SPARK_TYPES |= {"boolean": "boolean", "binary": "binary", "datetime": "timestamp"}


def spark_ddl(schema) -> str:
    """A model's output schema as a Spark DDL struct (``topics array<string>, stance string, ...``)."""
    from mlflow.types.schema import Array

    def ddl(kind) -> str:
        return f"array<{ddl(kind.dtype)}>" if isinstance(kind, Array) else SPARK_TYPES[kind.name]

    return ", ".join(f"`{spec.name}` {ddl(spec.type)}" for spec in schema.inputs)


def tag_spark(job: BatchJob, master: str | None = None) -> dict:
    """Tag with ``mlflow.pyfunc.spark_udf`` on a Spark DataFrame of the input; Parquet parts out."""
    import mlflow
    from pyspark.sql import functions as F

    check_job(job)
    uri, model = load_model(job.model)  # a broken reference fails before Spark starts
    start = time.perf_counter()
    spark = spark_session(master)
    spark.sparkContext.setLogLevel("ERROR")
    started = time.perf_counter() - start
    paths = [str(p) for p in job.files]
    if job.format == "parquet":
        frame = spark.read.parquet(*paths)
    elif job.format == "json":
        frame = spark.read.json(paths)
    else:
        frame = spark.read.csv(paths, header=True)
    if job.text_column not in frame.columns:
        raise TaggerError(f"{job.source}: no column '{job.text_column}' (columns: {', '.join(frame.columns)})")
    target = F.lit(job.default_target)
    if job.target_column in frame.columns:
        given = F.trim(F.col(job.target_column).cast("string"))
        target = F.when(given.isNull() | (given == ""), target).otherwise(F.col(job.target_column).cast("string"))
    outputs = model.metadata.get_output_schema()
    udf = mlflow.pyfunc.spark_udf(spark, uri, result_type=spark_ddl(outputs), env_manager="local")
    text = F.coalesce(F.col(job.text_column).cast("string"), F.lit(""))
    tagged = frame.withColumn("_tagged", udf(F.struct(text.alias(TEXT_COLUMN), target.alias(TARGET_COLUMN))))
    renamed = renamed_inputs(frame.columns, outputs.input_names())
    tagged = tagged.select(*[F.col(f"`{c}`").alias(renamed.get(c, c)) for c in frame.columns], "_tagged.*")
    tagged.write.mode("errorifexists" if not job.output.exists() else "overwrite").parquet(str(job.output))
    rows = spark.read.parquet(str(job.output)).count()
    seconds = time.perf_counter() - start
    return {"engine": "spark", "rows": rows, "seconds": seconds, "startup_seconds": started, "output": str(job.output)}
