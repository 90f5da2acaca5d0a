"""``tagger tag-batch``: tag a whole file (or folder of parts) of sentences into Parquet, locally or on Spark.

Both engines run the same MLflow pyfunc model (by default the combined ``models:/tagger@champion``):
- ``local`` reads the input in chunks, tags them in worker processes (one per usable CPU; the TF-IDF
  fast path) and appends them in order to one Parquet file, so memory stays bounded whatever the input;
- ``spark`` reads the input as a Spark DataFrame and tags it with ``mlflow.pyfunc.spark_udf`` on any
  master (``local[2]``, ``spark://host:7077``, or the one ``spark-submit`` sets).
The output folder holds Parquet parts: every input column, then the model's output columns.

An output folder is complete when it holds ``_SUCCESS`` (written last, as Spark does). While a local run
works, its part and any downloaded model copy live in ``OUTPUT/_temporary/`` (readers skip ``_`` names),
and the part is renamed into place only when complete, so no unreadable part is ever visible. A run
killed with ``-9`` leaves no ``_SUCCESS``; the next run into that folder replaces it, saying so.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from train.domain import DEFAULT_TARGET, TARGET_COLUMN, TEXT_COLUMN
from train.errors import TaggerError
from train.inputs import MAX_JSON_DEPTH, too_deep

log = logging.getLogger("tagger")

FORMATS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}
DEFAULT_MODEL = "models:/tagger@champion"
SUCCESS = "_SUCCESS"  # written last: the output folder is complete (the marker Spark writes too)
TEMPORARY = "_temporary"  # the part being written and a downloaded model copy, until the run ends
PART = "part-00000.parquet"
PIECE_ROWS = 1_000  # rows per model call: the unit of progress and of work for the worker processes
PROGRESS_SECONDS = 5.0  # how often a run without a terminal logs how far it got


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


def check_job(job: BatchJob) -> bool:
    """Refuse a missing, mixed, empty or unreadable input and an output we may not write, before any work.

    Returns whether OUTPUT holds an incomplete output of an earlier run (no ``_SUCCESS``), to be replaced.
    """
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
    if job.chunk_size < 1:
        raise TaggerError("--chunk-size must be at least 1")
    if not [path for path in files if check_input(job, path)]:
        raise TaggerError(f"{job.source}: no rows to tag")
    return check_output(job.output)


def check_input(job: BatchJob, path: Path) -> bool:
    """Whether ``path`` holds rows; a non-regular, unreadable or empty-CSV file, or one without the text column,
    is refused (Parquet: footer and schema; CSV: header and first row; JSONL: first row)."""
    if not path.is_file():
        raise TaggerError(f"{path}: not a regular file")
    columns: list[str] | None = None
    if FORMATS[path.suffix.lower()] == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            parquet = pq.ParquetFile(path)
        except (OSError, ValueError, pa.ArrowException):
            raise TaggerError(f"{path}: not a readable Parquet file (corrupt or truncated)") from None
        columns, rows = parquet.schema_arrow.names, parquet.metadata.num_rows
    elif FORMATS[path.suffix.lower()] == "csv":
        try:
            head = pd.read_csv(path, nrows=1, dtype=str, keep_default_na=False, encoding="utf-8")
        except pd.errors.EmptyDataError:
            raise TaggerError(f"{path}: empty CSV file (no header line)") from None
        except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
            raise TaggerError(f"{path}: {csv_problem(exc)}") from None
        columns, rows = [str(c) for c in head.columns], len(head)
    else:
        first = json_rows(path)  # keys vary by row: the text column is checked per chunk
        rows = int(next(first, None) is not None)
        first.close()
    if columns is not None and job.text_column not in columns:
        shown = ", ".join(columns[:20]) + (", ..." if len(columns) > 20 else "")
        raise TaggerError(f"{path}: no column '{job.text_column}' (columns: {shown})")
    if FORMATS[path.suffix.lower()] == "parquet":
        kind = arrow_kind(parquet.schema_arrow.field(job.text_column).type)
        if kind not in ("string", "missing"):
            raise TaggerError(f"{path}: column '{job.text_column}' holds {kind} values, not text")
    return rows > 0


def check_output(output: Path) -> bool:
    """Refuse an output that is a file, lies under a file, holds a complete earlier output or foreign files.

    Returns whether it holds an incomplete output of an earlier run (only ``part-*`` and ``_temporary``
    entries, no ``_SUCCESS``), which the run replaces.
    """
    if output.is_symlink() or output.exists():
        if not output.is_dir():
            raise TaggerError(f"{output}: exists and is not a folder")
        names = sorted(entry.name for entry in output.iterdir())
        if SUCCESS in names:
            raise TaggerError(
                f"{output}: holds the complete output of an earlier run ({SUCCESS}); delete it or choose another folder"
            )
        foreign = [name for name in names if name != TEMPORARY and not name.startswith(("part-", ".part-"))]
        if foreign:
            raise TaggerError(
                f"{output}: not empty and not a tag-batch output (it holds '{foreign[0]}'); "
                "choose a new or empty folder"
            )
        return bool(names)
    ancestor = output.absolute().parent
    while not (ancestor.exists() or ancestor.is_symlink()):
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise TaggerError(f"{output}: cannot be created: {ancestor} is not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise TaggerError(f"{output}: cannot be created: {ancestor} is not writable")
    return False


def csv_problem(exc: Exception) -> str:
    """A pandas CSV error as a short phrase with its line, never the file's contents."""
    import re

    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 text ({exc.reason})"
    text = str(exc)
    ragged = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", text)
    if ragged:
        expected, line, saw = ragged.groups()
        return f"line {line}: {saw} fields where the header has {expected} (ragged CSV)"
    where = re.search(r"(?:line|row) (\d+)", text)
    return f"not valid CSV{f' near line {where.group(1)}' if where else ''} ({type(exc).__name__})"


def json_rows(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSONL file; a bad line is an error naming it."""
    import orjson

    too_deep_message = f"JSON nested more than {MAX_JSON_DEPTH} levels deep"
    loads, decode_error = orjson.loads, orjson.JSONDecodeError
    with open(path, "rb", buffering=1 << 20) as handle:
        for number, raw in enumerate(handle, 1):
            if number == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")
            if not raw.strip():
                continue
            try:
                row = loads(raw)  # orjson; a line it refuses is read again by json below, for json's messages
            except decode_error:
                pass  # and json reads what orjson refuses but json takes (NaN, a lone surrogate: refused later)
            else:
                if type(row) is dict and not too_deep(row):
                    yield number, row
                    continue
            try:
                row = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise TaggerError(f"{path}: line {number}: not UTF-8 text ({exc.reason})") from None
            except RecursionError:
                raise TaggerError(f"{path}: line {number}: {too_deep_message}") from None
            except ValueError as exc:  # json.JSONDecodeError
                raise TaggerError(f"{path}: line {number}: not valid JSON ({exc.msg}, column {exc.colno})") from None
            if not isinstance(row, dict):
                raise TaggerError(f"{path}: line {number}: not a JSON object")
            if too_deep(row):
                raise TaggerError(f"{path}: line {number}: {too_deep_message}")
            yield number, row


def read_chunks(job: BatchJob) -> Iterator[tuple[Path, pd.DataFrame]]:
    """(file, chunk) for the input, ``chunk_size`` rows at a time; each chunk's index is where its rows are
    (JSONL: line numbers; CSV and Parquet: row numbers from 1), so errors can name them."""
    for path in job.files:
        if job.format == "parquet":
            yield from ((path, chunk) for chunk in parquet_chunks(path, job.chunk_size))
        elif job.format == "json":
            rows: list[dict] = []
            lines: list[int] = []
            for number, row in json_rows(path):
                rows.append(row)
                lines.append(number)
                if len(rows) == job.chunk_size:
                    yield path, json_frame(path, rows, lines)
                    rows, lines = [], []
            if rows:
                yield path, json_frame(path, rows, lines)
        else:
            try:
                for chunk in pd.read_csv(
                    path, chunksize=job.chunk_size, dtype=str, keep_default_na=False, encoding="utf-8"
                ):
                    chunk.index = chunk.index + 1
                    yield path, chunk
            except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
                raise TaggerError(f"{path}: {csv_problem(exc)}") from None


def json_frame(path: Path, rows: list[dict], lines: list[int]) -> pd.DataFrame:
    """JSONL rows as a frame indexed by line number; a string with a lone surrogate is an error naming its line."""
    try:
        return pd.DataFrame(rows, index=lines)
    except UnicodeEncodeError:
        for number, row in zip(lines, rows, strict=True):
            try:
                json.dumps(row, ensure_ascii=False).encode("utf-8")
            except UnicodeEncodeError:
                raise TaggerError(
                    f"{path}: line {number}: a string holds a lone surrogate (an unpaired \\uD800-\\uDFFF escape)"
                ) from None
        raise


def parquet_chunks(path: Path, size: int) -> Iterator[pd.DataFrame]:
    """A Parquet file by record batches; a corrupt page is an error naming the rows read before it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    start = 1
    try:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=size):
            chunk = batch.to_pandas()
            chunk.index = pd.RangeIndex(start, start + len(chunk))
            start += len(chunk)
            yield chunk
    except (OSError, ValueError, pa.ArrowException):
        raise TaggerError(f"{path}: unreadable Parquet data after row {start - 1} (corrupt file)") from None


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


def model_frame(job: BatchJob, chunk: pd.DataFrame, path: Path | None = None) -> pd.DataFrame:
    """The model's input columns: ``text``, and ``target`` (the default where the input has none).

    The text column must hold text or nothing: a number, list or object in it is an error naming its line.
    """
    if job.text_column not in chunk.columns:
        raise TaggerError(
            f"{path or job.source}: no column '{job.text_column}' (columns: {', '.join(map(str, chunk.columns))})"
        )
    texts = chunk[job.text_column]
    if texts.dtype == object or not pd.api.types.is_string_dtype(texts.dtype):
        kinds = texts.map(value_kind)
        odd = kinds[kinds.notna() & (kinds != "string")]
        if len(odd):
            unit = "line" if job.format == "json" else "row"
            raise TaggerError(
                f"{path or job.source}: {unit} {odd.index[0]}: column '{job.text_column}' holds a {odd.iloc[0]}, "
                "not text"
            )
    frame = pd.DataFrame({TEXT_COLUMN: texts.fillna("").astype(str)})
    if job.target_column in chunk.columns:
        frame[TARGET_COLUMN] = chunk[job.target_column].fillna(job.default_target).astype(str)
        frame.loc[frame[TARGET_COLUMN].str.strip() == "", TARGET_COLUMN] = job.default_target
    else:
        frame[TARGET_COLUMN] = job.default_target
    return frame


def renamed_inputs(inputs: list[str], outputs: list[str]) -> dict[str, str]:
    """Input columns that an output column would shadow (e.g. the gold ``topics`` of a labelled file) get ``_input``."""
    return {name: f"{name}_input" for name in inputs if name in outputs}


def load_model(reference: str, scratch: Path | None = None) -> tuple[str, object]:
    """The pyfunc model behind a reference (run id, ``models:/``, ``runs:/`` or folder), as ``tagger predict`` takes.

    Returns (where it was loaded from, model). With ``scratch``, that is a local folder: the store's own for a
    ``models:/`` model in a local store, else a copy downloaded into ``scratch`` (never MLflow's temp folders,
    which nothing removes), so worker processes can load it too.
    """
    from train.tracking import store
    from train.tracking.packaging import check_in_store, load_pyfunc, model_uri

    store.setup()
    uri = model_uri(reference)
    if uri.startswith(("runs:/", "models:/")):
        check_in_store(uri)  # a models:/ or runs:/ URI must resolve inside the store's artifact folders
    try:
        source = uri if scratch is None else model_folder(uri, scratch)
        return source, load_pyfunc(source)
    except Exception as exc:  # noqa: BLE001 - MLflow raises several types for a bad reference
        hint = " (run 'tagger promote' for both tasks first)" if reference == DEFAULT_MODEL else ""
        raise TaggerError(f"model '{reference}': cannot load ({type(exc).__name__}: {exc}){hint}") from None


def model_folder(uri: str, scratch: Path) -> str:
    """A local folder holding the model at ``uri``: the model folder itself, the local store's folder for
    ``models:/``, or a download into ``scratch`` (``runs:/``, or a remote store)."""
    import mlflow
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository
    from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository

    if not uri.startswith(("runs:/", "models:/")):
        return uri
    if uri.startswith("models:/"):
        root, path = ModelsArtifactRepository.split_models_uri(uri)
        repo = ModelsArtifactRepository(root)
        if isinstance(repo.repo, LocalArtifactRepository):
            return repo.download_artifacts(path)  # no destination: the store's own folder, nothing copied
    scratch.mkdir(parents=True, exist_ok=True)
    return mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(scratch))


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask), as the default number of local workers."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


_WORKER_MODEL = None


def die_with_parent(parent: int) -> None:
    """End this worker process when ``parent`` dies, even by ``kill -9``.

    On Linux the kernel sends SIGKILL at the parent's death (``prctl(PR_SET_PDEATHSIG)``); elsewhere a
    thread checks the parent every second. A parent that died before this ran ends the worker now.
    Without this, workers of a killed parent waited forever on a queue whose other end they hold themselves,
    and kept the multiprocessing resource tracker alive.
    """
    try:
        import ctypes

        if ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0) != 0:  # 1: PR_SET_PDEATHSIG
            raise OSError(ctypes.get_errno(), "prctl")
    except (OSError, AttributeError):  # no prctl: not Linux
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="watch-parent").start()
    if os.getppid() != parent:
        os._exit(1)


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(1)


def _load_worker_model(folder: str, parent: int) -> None:
    global _WORKER_MODEL
    die_with_parent(parent)
    from train.tracking.packaging import load_pyfunc

    _WORKER_MODEL = load_pyfunc(folder)


def _tag_chunk(frame: pd.DataFrame) -> pd.DataFrame:
    return _WORKER_MODEL.predict(frame)


def pieces(frame: pd.DataFrame, size: int | None = None) -> list[pd.DataFrame]:
    """``frame`` in consecutive pieces of at most ``size`` rows (default ``PIECE_ROWS``; one model call each)."""
    size = size or PIECE_ROWS
    return [frame.iloc[i : i + size] for i in range(0, len(frame), size)] or [frame]


def joined(outputs: list[pd.DataFrame]) -> pd.DataFrame:
    return outputs[0] if len(outputs) == 1 else pd.concat(outputs, ignore_index=True)


def tagged_chunks(
    job: BatchJob, folder: str, model, workers: int, progress=None
) -> Iterator[tuple[Path, pd.DataFrame, pd.DataFrame]]:
    """(file, input chunk, model output) in input order; ``workers`` processes tag pieces side by side.

    Each chunk is tagged in pieces of ``PIECE_ROWS`` rows; ``progress(rows)`` is called as each piece is
    done, so progress shows for any input size. ``model`` (loaded from the local ``folder``) tags in this
    process when ``workers`` is 1; otherwise each worker loads it once from ``folder`` and dies with this
    process; at most two pieces per worker (and their chunks) are in flight, so memory stays bounded
    whatever the input size.
    """
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    def done(rows: int):
        return lambda _future: progress(rows) if progress else None

    if workers == 1:
        for path, chunk in read_chunks(job):
            outputs = []
            for piece in pieces(model_frame(job, chunk, path)):
                outputs.append(model.predict(piece))
                done(len(piece))(None)
            yield path, chunk, joined(outputs)
        return
    pool = ProcessPoolExecutor(
        workers, mp_context=get_context("spawn"), initializer=_load_worker_model, initargs=(folder, os.getpid())
    )
    try:
        pending: deque = deque()
        for path, chunk in read_chunks(job):
            futures = []
            for piece in pieces(model_frame(job, chunk, path)):
                futures.append(pool.submit(_tag_chunk, piece))
                futures[-1].add_done_callback(done(len(piece)))
            pending.append((path, chunk, futures))
            while sum(len(f) for _, _, f in pending) >= 2 * workers and len(pending) > 1:
                path, ready, futures = pending.popleft()
                yield path, ready, joined([future.result() for future in futures])
        while pending:
            path, ready, futures = pending.popleft()
            yield path, ready, joined([future.result() for future in futures])
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class ProgressLog:
    """How far a batch got, on stderr, for any input size: a start line, then (without a terminal, where
    no bar shows) the rows and share done at most every ``PROGRESS_SECONDS``; the caller logs the end."""

    def __init__(self, total: int | None, workers: int, model: str):
        self.total, self.rows, self.lock = total, 0, threading.Lock()
        self.last = time.monotonic()
        self.log_lines = not sys.stderr.isatty()
        what = f"{total} sentences" if total is not None else "the sentences"
        log.info("tagging %s with %s (%d worker%s)", what, model, workers, "s" if workers > 1 else "")

    def __call__(self, rows: int) -> None:
        with self.lock:  # pieces finish on the pool's threads
            self.rows += rows
            now = time.monotonic()
            if not self.log_lines or now - self.last < PROGRESS_SECONDS:
                return
            self.last = now
        if self.total:
            log.info("tagged %d of %d sentences (%.0f%%)", self.rows, self.total, 100 * self.rows / self.total)
        else:
            log.info("tagged %d sentences", self.rows)


def open_output(output: Path, replace: bool) -> tuple[int, Path | None]:
    """Create OUTPUT (or empty the incomplete output of an earlier run in it) and hold its lock while this run
    writes it; returns (the lock's descriptor, the outermost folder this run created, or None)."""
    import fcntl

    created = outermost_missing(output)
    try:
        output.mkdir(parents=True, exist_ok=True)
        lock = os.open(output, os.O_RDONLY)
    except OSError as exc:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise TaggerError(f"{output}: cannot create the output folder ({exc.strerror})") from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(lock)
        raise TaggerError(f"{output}: another tag-batch run is writing this folder") from None
    if replace:
        log.warning("%s: incomplete output of an earlier run (no %s); replacing it", output, SUCCESS)
        clear_folder(output)
    return lock, created


def outermost_missing(output: Path) -> Path | None:
    """The outermost folder on the way to ``output`` that does not exist yet (what creating it adds), or None."""
    missing = None
    for folder in [output.absolute(), *output.absolute().parents]:
        if folder.exists():
            break
        missing = folder
    return missing


def clear_folder(folder: Path) -> None:
    """Remove everything in ``folder`` (not the folder itself)."""
    for entry in folder.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def value_kind(value) -> str | None:
    """What a JSON-like value is, for messages: None for a missing value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, (list, tuple)) or hasattr(value, "__array__"):
        return "list"
    return type(value).__name__


def why_unstorable(frame: pd.DataFrame, unit: str) -> str:
    """Which column and row of a chunk Arrow cannot store: the first value whose kind differs from the
    column's first value, or else the first value that fails alone. Values are never echoed."""
    import pyarrow as pa

    for name in frame.columns:
        try:
            pa.array(frame[name], from_pandas=True)
            continue
        except (pa.ArrowException, ValueError, TypeError, OverflowError):
            pass
        kinds = frame[name].map(value_kind)
        present = kinds[kinds.notna()]
        odd = present[present != present.iloc[0]] if len(present) else present
        if len(odd):
            return (
                f"{unit} {odd.index[0]}: column '{name}' holds a {odd.iloc[0]} where earlier rows hold a "
                f"{present.iloc[0]} (a column needs one type)"
            )
        for where, value in frame[name].items():
            try:
                pa.array([value], from_pandas=True)
            except (pa.ArrowException, ValueError, TypeError, OverflowError):
                return f"{unit} {where}: column '{name}' holds a value that Parquet cannot store"
        return f"column '{name}' cannot be stored in Parquet"
    return "rows that Parquet cannot store"


def arrow_kind(kind) -> str:
    """An Arrow type in the words of ``value_kind``: string, number, boolean, list, object, or missing (null)."""
    import pyarrow.types as t

    if t.is_dictionary(kind):
        kind = kind.value_type
    checks = [(t.is_string_view, "string")] if hasattr(t, "is_string_view") else []
    checks += [(t.is_null, "missing"), (t.is_boolean, "boolean"), (t.is_string, "string")]
    checks += [(t.is_large_string, "string"), (t.is_integer, "number"), (t.is_floating, "number")]
    checks += [(t.is_list, "list"), (t.is_large_list, "list"), (t.is_struct, "object")]
    return next((name for check, name in checks if check(kind)), str(kind))


def to_table(path: Path, frame: pd.DataFrame, unit: str, schema=None):
    """A chunk (input and output columns) as an Arrow table, in ``schema`` (that of the first chunk) when given.

    A column missing from this chunk is null here; a new column or a changed type is an error naming the file,
    column and rows.
    """
    import pyarrow as pa

    try:
        table = pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowException, ValueError, TypeError, OverflowError):
        raise TaggerError(f"{path}: {why_unstorable(frame, unit)}") from None
    if schema is None or table.schema.equals(schema):
        return table
    rows = f"{unit}s {frame.index[0]}-{frame.index[-1]}"
    hint = "(a larger --chunk-size puts more rows in the first chunk)"
    new = [name for name in table.schema.names if name not in schema.names]
    if new:
        raise TaggerError(f"{path}: {rows}: column '{new[0]}' is not in the first chunk's rows {hint}")
    columns = []
    for field in schema:
        column = table.column(field.name) if field.name in table.schema.names else pa.nulls(len(table), field.type)
        try:
            columns.append(column.cast(field.type))
        except (pa.ArrowException, ValueError, TypeError):
            raise TaggerError(
                f"{path}: {rows}: column '{field.name}' holds {arrow_kind(column.type)} values where the first "
                f"chunk holds {arrow_kind(field.type)} values {hint}"
            ) from None
    return pa.Table.from_arrays(columns, schema=schema)


def tag_local(job: BatchJob, workers: int | None = None) -> dict:
    """Tag chunk by chunk in this machine's processes; one Parquet file with a row group per chunk.

    The part is written under ``OUTPUT/_temporary/`` and renamed into OUTPUT when complete; ``_SUCCESS``
    follows. Any failure removes what this run wrote (and OUTPUT itself, if this run created it).
    """
    from contextlib import closing

    import pyarrow.parquet as pq
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    replace = check_job(job)
    workers = workers or usable_cpus()
    total = count_rows(job)
    lock, created = open_output(job.output, replace)
    unit = "line" if job.format == "json" else "row"
    writer, rows, start = None, 0, time.perf_counter()
    scratch = job.output / TEMPORARY
    temporary_part = scratch / PART
    try:
        scratch.mkdir(exist_ok=True)
        folder, model = load_model(job.model, scratch / "model")  # a broken reference fails before any tagging
        columns = [TextColumn("tagging"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
        with Progress(*columns, disable=not sys.stderr.isatty(), transient=True) as progress:
            bar = progress.add_task("tagging", total=total)
            logged = ProgressLog(total, workers, job.model)

            def advance(piece_rows: int) -> None:
                progress.update(bar, advance=piece_rows)
                logged(piece_rows)

            with closing(tagged_chunks(job, folder, model, workers, advance)) as chunks:
                for path, chunk, tagged in chunks:
                    tagged = tagged.set_index(chunk.index)
                    chunk = chunk.rename(columns=renamed_inputs(list(chunk.columns), list(tagged.columns)))
                    frame = pd.concat([chunk, tagged], axis=1)
                    table = to_table(path, frame, unit, writer.schema if writer is not None else None)
                    try:
                        if writer is None:
                            writer = pq.ParquetWriter(temporary_part, table.schema)
                        writer.write_table(table)
                    except OSError as exc:
                        raise TaggerError(f"{job.output}: cannot write ({exc.strerror or exc})") from None
                    rows += len(chunk)
        if writer is None:
            raise TaggerError(f"{job.source}: no rows to tag")
        try:
            writer.close()
            writer = None
            os.replace(temporary_part, job.output / PART)  # complete: only now visible
            shutil.rmtree(scratch)
            marker = {"rows": rows, "source": str(job.source), "model": job.model}
            (job.output / SUCCESS).write_text(json.dumps(marker) + "\n", encoding="utf-8")
        except OSError as exc:
            raise TaggerError(f"{job.output}: cannot write ({exc.strerror or exc})") from None
    except BaseException:
        if writer is not None:
            try:
                writer.close()
            except Exception:  # noqa: BLE001 - the first error is the one to report
                pass
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)  # nothing of a failed run is left
        else:
            clear_folder(job.output)
        raise
    finally:
        os.close(lock)
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
    if master and (master.startswith("local") or loopback_master(master)):  # all on this machine: stay on loopback
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # executors connect back to the driver there
        builder = builder.config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
    if master and master.startswith("local"):
        builder = builder.config("spark.ui.enabled", "false")
    return builder.getOrCreate()


def loopback_master(master: str) -> bool:
    """Whether a ``spark://host:port[,host:port]`` master runs on this machine's loopback (127.x, localhost, ::1)."""
    if not master.startswith("spark://"):
        return False
    hosts = [address.rsplit(":", 1)[0].strip("[]") for address in master[len("spark://"):].split(",")]
    return all(host == "localhost" or host.startswith("127.") or host == "::1" for host in hosts)


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
    replace = check_job(job)
    uri, model = load_model(job.model)  # a broken reference fails before Spark starts
    if replace:
        log.warning("%s: incomplete output of an earlier run (no %s); replacing it", job.output, SUCCESS)
        clear_folder(job.output)
    created = outermost_missing(job.output)
    start = time.perf_counter()
    try:  # a session this call makes is stopped at the end (spark_session says what is missing, if anything)
        from pyspark.sql import SparkSession

        active = SparkSession.getActiveSession()
    except ImportError:
        active = None
    spark = spark_session(master)
    try:
        return _tag_spark(job, spark, uri, model, created, start)
    finally:
        if active is None:  # the application ends: a cluster frees its executors, a new call gets its --master
            spark.stop()


def _tag_spark(job: BatchJob, spark, uri: str, model, created: Path | None, start: float) -> dict:
    """The Spark part of :func:`tag_spark`, on a started session."""
    import mlflow
    from pyspark.sql import functions as F

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
    try:  # Spark writes parts under _temporary/ and _SUCCESS last, like the local engine
        tagged.write.mode("errorifexists" if not job.output.exists() else "overwrite").parquet(str(job.output))
    except BaseException:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        elif job.output.is_dir():
            clear_folder(job.output)
        raise
    rows = spark.read.parquet(str(job.output)).count()
    seconds = time.perf_counter() - start
    return {"engine": "spark", "rows": rows, "seconds": seconds, "startup_seconds": started, "output": str(job.output)}
