"""Load labelled sentence datasets (JSONL / CSV / Parquet through 🤗 ``datasets``) and check them.

Every problem is reported with the file, line (or row), id, column or label at fault, before any
training starts. Columns are mapped by config, so other datasets (with other names or label
spellings) train through a config alone.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from train.data.sentences import is_blank
from train.errors import TaggerError
from train.inputs import MAX_DATA_BYTES, MAX_JSON_DEPTH, check_user_file, read_user_file, too_deep

log = logging.getLogger(__name__)

FORMATS = {
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
}


@dataclass
class LabelledData:
    """A checked dataset in the standard columns: id, text, target, labels, group, line."""

    path: Path
    frame: pd.DataFrame
    sha256: str
    files: dict[str, tuple[Path, str]] = field(default_factory=dict)  # corpus name -> (file, sha256)

    @property
    def corpora(self) -> list[str]:
        """Corpus names when several files were trained together (column ``corpus``), else []."""
        return list(self.files) if len(self.files) > 1 else []

    def subset(self, rows) -> LabelledData:
        """The same dataset restricted to ``rows`` (a mask or positions), renumbered from 0."""
        frame = self.frame.iloc[np.flatnonzero(rows) if np.asarray(rows).dtype == np.bool_ else rows]
        return LabelledData(self.path, frame.reset_index(drop=True), self.sha256, self.files)

    def __len__(self) -> int:
        return len(self.frame)

    def sample_weights(self, weights: dict[str, float]) -> np.ndarray | None:
        """Each sentence's weight from its corpus (``data.weights``; unnamed corpora weigh 1), or None."""
        if not weights or "corpus" not in self.frame.columns:
            return None
        return self.frame["corpus"].map(lambda name: weights.get(name, 1.0)).to_numpy(dtype=float)

    @property
    def texts(self) -> list[str]:
        return self.frame["text"].tolist()

    @property
    def labels(self) -> list:
        return self.frame["labels"].tolist()

    @property
    def inputs(self) -> pd.DataFrame:
        """What a model sees: text and (possibly empty) target."""
        return self.frame[["text", "target"]].reset_index(drop=True)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def detect_format(path: Path, fmt: str = "auto") -> str:
    if fmt != "auto":
        return "jsonl" if fmt == "json" else fmt
    try:
        return FORMATS[path.suffix.lower()]
    except KeyError:
        raise TaggerError(
            f"{path}: cannot tell the format from the extension '{path.suffix}'; "
            f"set format to one of jsonl, csv, tsv, parquet"
        ) from None


def _check_text_file(path: Path, fmt: str, encoding: str = "utf-8") -> list[int]:
    """Check the encoding and (for JSONL) each line's JSON; return the line number of each record."""
    raw = read_user_file(path, "data file", MAX_DATA_BYTES)
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        name = "UTF-8" if codecs.lookup(encoding).name == "utf-8" else encoding
        raise TaggerError(
            f"{path} line {line}: not valid {name} (byte offset {exc.start}); "
            "if the file uses another encoding, set it with data.encoding"
        ) from None
    if not text.strip():
        raise TaggerError(f"{path}: file is empty")
    if fmt != "jsonl":
        return []
    record_lines = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        too_deep_message = f"{path} line {number}: JSON nested deeper than {MAX_JSON_DEPTH} levels"
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TaggerError(f"{path} line {number}: invalid JSON: {exc.msg}") from None
        except RecursionError:
            raise TaggerError(too_deep_message) from None
        if not isinstance(value, dict):
            raise TaggerError(f"{path} line {number}: expected a JSON object, got {type(value).__name__}")
        if too_deep(value):
            raise TaggerError(too_deep_message)
        try:  # JSON's \ud800 escapes decode to lone surrogates, which no UTF-8 writer (Arrow) accepts
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            surrogate = f"\\u{ord(exc.object[exc.start]):04x}"
            raise TaggerError(
                f"{path} line {number}: a lone surrogate ({surrogate}) in a string: not valid Unicode text"
            ) from None
        record_lines.append(number)
    return record_lines


def read_table(path: Path, fmt: str = "auto", encoding: str = "utf-8") -> tuple[pd.DataFrame, list[int]]:
    """Read a file into a DataFrame through ``datasets``; also return each row's line number."""
    path = Path(path)
    if check_user_file(path, "data file", MAX_DATA_BYTES) == 0:
        raise TaggerError(f"{path}: file is empty")
    fmt = detect_format(path, fmt)
    lines = _check_text_file(path, fmt, encoding) if fmt != "parquet" else []

    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # no "Failed to read" lines besides ours
    loaders = {
        "jsonl": lambda p: datasets.Dataset.from_json(p, keep_in_memory=True, encoding=encoding),
        "csv": lambda p: datasets.Dataset.from_csv(p, keep_in_memory=True, encoding=encoding),
        "tsv": lambda p: datasets.Dataset.from_csv(p, keep_in_memory=True, encoding=encoding, sep="\t"),
        "parquet": lambda p: datasets.Dataset.from_parquet(p, keep_in_memory=True),
    }
    try:
        frame = loaders[fmt](str(path)).to_pandas()
    except Exception as exc:  # the loaders raise many types; report them as a data error
        raise TaggerError(f"{path}: cannot read as {fmt}: {_reason(exc)}{FORMAT_HINTS.get(fmt, '')}") from None
    if frame.empty:
        raise TaggerError(f"{path}: file has no records")
    if fmt in ("csv", "tsv"):
        lines = list(range(2, len(frame) + 2))
    elif len(lines) != len(frame):
        lines = list(range(1, len(frame) + 1))
    return frame, lines


FORMAT_HINTS = {
    "csv": " (is the delimiter a comma? for tab-separated files set format: tsv)",
    "tsv": " (is the file tab-separated?)",
}


def _reason(exc: BaseException) -> str:
    """The first line of the innermost cause (``datasets`` wraps the parser's error in a generic one)."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)


COLUMN_NAME = re.compile(r"^[\w .()/-]{1,64}$")


def _columns_found(columns) -> str:
    """The file's column names, when its header looks like one; a header that does not is not echoed."""
    names = [str(c) for c in columns]
    if len(names) <= 100 and all(COLUMN_NAME.match(n) for n in names):
        return f"columns: {', '.join(names)}"
    return "its first row does not look like a header of column names"


def _label_list(value, separator: str | None) -> list:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return []
    if isinstance(value, str):
        if separator is None:
            return [value] if value.strip() else []
        return [v.strip() for v in value.split(separator) if v.strip()]
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, list | tuple):
        return list(value)
    return [value]


def load_labelled(
    path: Path,
    *,
    task_type: str,
    labels: Sequence[str],
    columns,
    fmt: str = "auto",
    encoding: str = "utf-8",
    label_map: dict[str, str] | None = None,
    label_separator: str | None = None,
    default_target: str | None = None,
    require_labels: bool = True,
    max_text_chars: int | None = None,
    key: str = "columns",
    inherited: str = "",
) -> LabelledData:
    """Read and check a labelled file; map its columns and labels onto the task's schema.

    ``key``: the config key of ``columns`` that errors name (``data.columns``, ``evaluation.sets[0].columns``);
    ``inherited``: why the mapping came from elsewhere, said in a missing column's error.
    Every mapped column must exist (``group`` included); only the default ``id`` may be absent.
    """
    path = Path(path)
    frame, lines = read_table(path, fmt, encoding)
    label_map = {str(k): v for k, v in (label_map or {}).items()}
    schema = set(labels)

    label_columns = [columns.labels] if isinstance(columns.labels, str) else list(columns.labels)
    if columns.id and columns.id not in frame.columns and "id" not in columns.model_fields_set:
        columns = columns.model_copy(update={"id": None})  # no id column and none asked for: ids are line numbers
    needed = {"text": columns.text}
    if columns.id:
        needed["id"] = columns.id
    if columns.target and default_target is None:
        needed["target"] = columns.target
    if require_labels:
        needed.update({f"labels[{i}]": c for i, c in enumerate(label_columns)})
    if columns.group:
        needed["group"] = columns.group
    for role, column in needed.items():
        if column not in frame.columns:
            field_name = f"{key}.{'labels' if role.startswith('labels') else role}"
            hint = {
                "id": f" (or {key}.id: null to use line numbers as ids)",
                "group": f" (or {key}.group: null if its sentences do not come in documents)",
            }.get(role, "")
            if len(frame.columns) == 1 and any(sep in str(frame.columns[0]) for sep in "\t;|"):
                hint += "; the file seems to use another delimiter (set format: tsv for tab-separated files)"
            raise TaggerError(
                f"{path}: missing column '{column}' ({_columns_found(frame.columns)}); "
                f"{inherited}map it with {field_name}{hint}"
            )

    def where(i: int, record_id=None) -> str:
        unit = "line" if path.suffix.lower() != ".parquet" else "row"
        ident = f" (id {record_id})" if record_id is not None else ""
        return f"{path} {unit} {lines[i]}{ident}"

    def to_schema(raw, i, record_id) -> str:
        if not isinstance(raw, str | int | bool | float) or (isinstance(raw, float) and pd.isna(raw)):
            raise TaggerError(
                f"{where(i, record_id)}: a label must be a string, got {type(raw).__name__} "
                "(labels are a string or a flat list of strings)"
            )
        mapped = label_map.get(str(raw), raw)
        if mapped not in schema:
            raise TaggerError(
                f"{where(i, record_id)}: label '{raw}' is not in the schema ({', '.join(labels)})"
                + ("" if label_map else "; map dataset labels with label_map")
            )
        return mapped

    if require_labels and "suggested" in frame.columns:  # ``tagger select`` output not yet reviewed
        flagged = [i for i, value in enumerate(frame["suggested"].tolist()) if value is True]
        if flagged:
            raise TaggerError(
                f'{where(flagged[0])}: labels are a model\'s suggestions ("suggested": true) not reviewed by a '
                "person; review them and set suggested to false (or use tagger import-labels)"
            )
    ids = frame[columns.id].tolist() if columns.id else [str(n) for n in lines]
    seen: dict[str, int] = {}
    records = []
    for i, record_id in enumerate(ids):
        if record_id is None or (isinstance(record_id, float) and pd.isna(record_id)) or not str(record_id).strip():
            raise TaggerError(f"{where(i)}: missing id in column '{columns.id}'")
        if not isinstance(record_id, str | int | np.integer):
            raise TaggerError(f"{where(i)}: an id must be a string or an integer, got {type(record_id).__name__}")
        record_id = str(record_id)
        if record_id in seen:
            raise TaggerError(f"{where(i)}: duplicate id '{record_id}' (first at line {seen[record_id]})")
        seen[record_id] = lines[i]
        text = frame[columns.text].iloc[i]
        if not isinstance(text, str) or is_blank(text):
            raise TaggerError(f"{where(i, record_id)}: empty text in column '{columns.text}'")
        if max_text_chars is not None and len(text) > max_text_chars:
            raise TaggerError(
                f"{where(i, record_id)}: text has {len(text)} characters, over the limit of {max_text_chars} "
                "(data.max_text_chars); split it into sentences first"
            )
        target = default_target
        if columns.target and columns.target in frame.columns:
            value = frame[columns.target].iloc[i]
            if isinstance(value, str) and value.strip():
                target = value.strip()
        if columns.target and not target:
            raise TaggerError(
                f"{where(i, record_id)}: missing target in column '{columns.target}' "
                "(a stance task needs one per sentence, or set default_target)"
            )
        if not require_labels:
            value = None
        elif isinstance(columns.labels, str):
            raw_labels = _label_list(frame[columns.labels].iloc[i], label_separator)
            if task_type == "multilabel":
                value = sorted({to_schema(v, i, record_id) for v in raw_labels}, key=list(labels).index)
            else:
                if len(raw_labels) != 1:
                    raise TaggerError(
                        f"{where(i, record_id)}: expected exactly one label in '{columns.labels}', got {raw_labels}"
                    )
                value = to_schema(raw_labels[0], i, record_id)
        else:  # one binary column per label
            value = [to_schema(c, i, record_id) for c in label_columns if bool(frame[c].iloc[i])]
        group = frame[columns.group].iloc[i] if columns.group else None
        if isinstance(group, float) and np.isnan(group):  # an empty CSV cell: no document
            group = None
        records.append(
            {
                "id": record_id,
                "text": text,
                "target": target or "",
                "labels": value,
                "group": None if group is None else str(group),
                "line": lines[i],
            }
        )
    return LabelledData(path=path, frame=pd.DataFrame.from_records(records), sha256=file_sha256(path))


def load_for(config, eval_set=None, require_labels: bool = True) -> LabelledData:
    """Load the training file (or named corpora) of ``config``, or one of its evaluation sets."""
    source = eval_set or config.data
    columns = (eval_set.columns if eval_set and eval_set.columns else None) or config.data.columns
    key, inherited = "data.columns", ""
    if eval_set is not None:
        index = next(i for i, s in enumerate(config.evaluation.sets) if s is eval_set)
        key = f"evaluation.sets[{index}].columns"
        if eval_set.columns is None:  # read with the training mapping, which may not fit this file
            inherited = (
                f"evaluation set '{eval_set.name}' has no columns of its own, so it was read with data.columns; "
            )

    def pick(name):
        value = getattr(eval_set, name, None) if eval_set else None
        return value if value is not None else getattr(config.data, name)

    def load(path: Path, fmt: str) -> LabelledData:
        return load_labelled(
            path,
            task_type=config.task.type,
            labels=config.task.labels,
            columns=columns,
            fmt=fmt,
            encoding=pick("encoding"),
            label_map=pick("label_map"),
            label_separator=pick("label_separator"),
            default_target=pick("default_target"),
            require_labels=require_labels,
            max_text_chars=config.data.max_text_chars,
            key=key,
            inherited=inherited,
        )

    if eval_set is None and isinstance(config.data.train, dict):
        return _combine({name: load(Path(path), source.format) for name, path in config.data.train.items()})
    path = Path(source.path if eval_set else config.data.train)
    fmt = source.format
    if eval_set and fmt == "auto" and path.suffix.lower() not in FORMATS:
        fmt = config.data.format  # e.g. a benchmark's test.txt in the same layout as its train.txt
    return load(path, fmt)


def _combine(corpora: dict[str, LabelledData]) -> LabelledData:
    """Several named training files as one dataset with a ``corpus`` column; ids must be unique across them."""
    first: dict[str, tuple[Path, int]] = {}
    for data in corpora.values():
        for record_id, line in zip(data.frame["id"], data.frame["line"], strict=True):
            if record_id in first:
                other, other_line = first[record_id]
                raise TaggerError(
                    f"{data.path} line {line}: duplicate id '{record_id}' (also {other} line {other_line})"
                )
            first[record_id] = (data.path, line)
    files = {name: (data.path, data.sha256) for name, data in corpora.items()}
    combined = hashlib.sha256("".join(f"{n}:{sha}" for n, (_, sha) in files.items()).encode()).hexdigest()
    frame = pd.concat([data.frame.assign(corpus=name) for name, data in corpora.items()], ignore_index=True)
    return LabelledData(next(iter(corpora.values())).path, frame, combined, files)
