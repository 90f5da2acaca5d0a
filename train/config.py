"""Experiment configs: YAML files validated with pydantic before anything runs.

A config *is* the experiment (as in spaCy): task, labels, data, split, model family and its
parameters, evaluation sets and tracking. ``extends:`` inherits from another file (deep merge);
``--set a.b=value`` overrides single values; the resolved config is saved with every run.
"""

from __future__ import annotations

import codecs
import difflib
import re
import reprlib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from train.domain import experiment_name
from train.errors import TaggerError
from train.inputs import load_yaml

PACKAGE_ROOT = Path(__file__).resolve().parent  # the ``train`` package, logged with every model as code
PROJECT_ROOT = PACKAGE_ROOT.parent


SEED_MAX = 2**32 - 1  # numpy's and scikit-learn's seeds are unsigned 32-bit
MAX_BOOTSTRAP_SAMPLES = 100_000
TRACKING_SCHEMES = ("sqlite", "file", "http", "https", "postgresql", "mysql", "mssql", "databricks")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Columns(_Strict):
    """Which dataset columns hold what. ``labels`` may name one column or several binary columns."""

    id: str | None = "id"
    text: str = "text"
    labels: str | list[str] = "labels"
    target: str | None = None
    group: str | None = None


def _known_encoding(value: str | None) -> str | None:
    """A text encoding Python knows (not a bytes-to-bytes codec such as rot13, base64 or zlib)."""
    if value is not None:
        try:
            info = codecs.lookup(value)
        except LookupError:
            info = None
        if info is None or not getattr(info, "_is_text_encoding", True):
            raise ValueError(f"unknown text encoding '{value}' (e.g. utf-8, latin-1, cp1252)")
    return value


def _label_map_keys(value: Any) -> Any:
    """YAML reads ``{0: against}`` with an integer key: dataset labels are compared as text."""
    if isinstance(value, dict):
        return {str(k) if isinstance(k, int | float | bool) else k: v for k, v in value.items()}
    return value


class DataConfig(_Strict):
    train: Path | dict[str, Path]  # one file, or named corpora {real: a.jsonl, written: b.jsonl} trained together
    # per-corpus sample weights, e.g. {real: 2.0}: a sentence of `real` counts twice in the loss (others 1)
    weights: dict[str, Annotated[float, Field(gt=0, le=1000)]] = Field(default_factory=dict)
    format: Literal["auto", "jsonl", "json", "csv", "tsv", "parquet"] = "auto"
    encoding: str = "utf-8"
    columns: Columns = Field(default_factory=Columns)
    label_map: dict[str, str] = Field(default_factory=dict)
    label_separator: str | None = None
    default_target: str | None = None
    allow_leakage: bool = False
    leakage_threshold: float = Field(0.8, gt=0, le=1)
    max_text_chars: int = Field(10_000, ge=1, le=10_000_000)

    _encoding = field_validator("encoding")(_known_encoding)
    _label_map = field_validator("label_map", mode="before")(_label_map_keys)

    @field_validator("train")
    @classmethod
    def _corpus_names(cls, value: Path | dict[str, Path]) -> Path | dict[str, Path]:
        if isinstance(value, dict):
            if not value:
                raise ValueError("name at least one corpus, e.g. {real: data/train/real.jsonl}")
            for name in value:
                if not re.match(r"^[A-Za-z0-9_-]{1,32}$", name):
                    raise ValueError(f"corpus name '{name}': use up to 32 letters, digits, '-' or '_' (names metrics)")
        return value

    @model_validator(mode="after")
    def _weights_name_corpora(self) -> DataConfig:
        if not self.weights:
            return self
        if not isinstance(self.train, dict):
            raise ValueError("data.weights weighs named corpora: give data.train as {name: file, ...}")
        unknown = [name for name in self.weights if name not in self.train]
        if unknown:
            raise ValueError(
                f"data.weights names corpus '{unknown[0]}', which data.train does not have "
                f"(corpora: {', '.join(self.train)})"
            )
        return self


class SplitConfig(_Strict):
    dev_fraction: float = Field(0.2, gt=0, le=0.5)
    stratify: bool = True
    group_by_column: bool = True
    seed: int = Field(13, ge=0, le=SEED_MAX)
    folds: int = Field(5, ge=2, le=50)  # for `tagger cv`
    repeats: int = Field(1, ge=1, le=20)


class ModelConfig(_Strict):
    family: str
    params: dict[str, Any] = Field(default_factory=dict)


class DecisionConfig(_Strict):
    """How scores become labels: tuned on dev (``tagger train``) or out-of-fold scores (``tagger cv``)."""

    tune: bool = True  # false: thresholds 0.5 (multi-label), plain arg-max (multi-class)
    objective: Literal["f1_macro", "f_avg", "accuracy"] = "f1_macro"  # multi-class offsets maximise this


class EvalSet(_Strict):
    name: str
    path: Path
    format: Literal["auto", "jsonl", "json", "csv", "tsv", "parquet"] = "auto"
    encoding: str | None = None
    columns: Columns | None = None
    label_map: dict[str, str] | None = None
    label_separator: str | None = None
    default_target: str | None = None

    _encoding = field_validator("encoding")(_known_encoding)
    _label_map = field_validator("label_map", mode="before")(_label_map_keys)

    @field_validator("name")
    @classmethod
    def _name_is_metric_safe(cls, value: str) -> str:
        if not value or not all(c.isalnum() or c in "-_" for c in value):
            raise ValueError("use letters, digits, '-' or '_' (it prefixes metric names)")
        return value


class EvaluationConfig(_Strict):
    sets: list[EvalSet] = Field(default_factory=list)
    bootstrap_samples: int = Field(1000, ge=0, le=MAX_BOOTSTRAP_SAMPLES)
    confidence: float = Field(0.95, gt=0, lt=1)


class TrackingConfig(_Strict):
    experiment: str | None = None
    uri: str | None = None
    run_name: str | None = None
    log_model: bool = True

    @field_validator("uri")
    @classmethod
    def _known_scheme(cls, value: str | None) -> str | None:
        problem = tracking_uri_problem(value)
        if problem:
            raise ValueError(problem)
        return value


def tracking_uri_problem(uri: str | None) -> str | None:
    """Why MLflow could not use ``uri`` as a tracking store (an unknown scheme), else None."""
    if not uri or ":" not in uri:
        return None  # a plain path
    scheme = uri.split(":", 1)[0].split("+", 1)[0].lower()
    if len(scheme) > 1 and scheme not in TRACKING_SCHEMES:  # one letter: a Windows drive
        return f"unknown tracking URI scheme '{scheme}:' (use {', '.join(TRACKING_SCHEMES)})"
    return None


NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"  # names that become experiment, study and folder names


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name an experiment, a study or a folder (``task.name``, ``--study``), else None."""
    if re.match(NAME_PATTERN, name):
        return None
    return "use up to 64 letters, digits, '.', '-' or '_', starting with a letter or digit"


class TaskConfig(_Strict):
    name: str
    type: Literal["multilabel", "multiclass"]
    labels: list[str]

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        problem = name_problem(value)
        if problem:
            raise ValueError(f"{problem} (it names the experiment, the registered model and sweep folders)")
        return value

    @field_validator("labels")
    @classmethod
    def _labels_unique(cls, value: list[str]) -> list[str]:
        if len(value) < 2:
            raise ValueError("a task needs at least two labels")
        if len(set(value)) != len(value):
            raise ValueError(f"labels must be unique, got {value}")
        return value


class Config(_Strict):
    extends: str | None = None
    task: TaskConfig
    data: DataConfig
    split: SplitConfig = Field(default_factory=SplitConfig)
    model: ModelConfig
    decision: DecisionConfig = Field(default_factory=DecisionConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    seed: int = Field(13, ge=0, le=SEED_MAX)

    @model_validator(mode="after")
    def _check_model_family(self) -> Config:
        from train.registry import model_params_schema

        schema = model_params_schema(self.model.family)
        self.model.params = _validate_section(schema, self.model.params, ("model", "params")).model_dump()
        return self

    @model_validator(mode="after")
    def _check_decision(self) -> Config:
        if self.decision.objective != "f1_macro" and self.task.type == "multilabel":
            raise ValueError("decision.objective applies to multi-class tasks; multi-label thresholds maximise F1")
        if self.decision.objective == "f_avg" and not {"favor", "against"} <= set(self.task.labels):
            raise ValueError(
                "decision.objective f_avg (mean F1 of favor and against) needs the labels 'favor' and 'against' "
                f"in task.labels (got {', '.join(self.task.labels)})"
            )
        return self

    @property
    def experiment_name(self) -> str:
        return self.tracking.experiment or experiment_name(self.task.name)


def _deep_merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml(path: Path) -> dict:
    from train.inputs import read_yaml

    data = read_yaml(path, "config file")  # which also refuses a file not ending in .yaml or .yml
    if data is None:
        raise TaggerError(f"{path}: config file is empty")
    if not isinstance(data, dict):
        raise TaggerError(f"{path}: a config must be a mapping of keys, got {type(data).__name__}")
    return data


def load_raw(path: Path, _seen: tuple[Path, ...] = ()) -> dict:
    """Read a YAML config and resolve its ``extends:`` chain (paths relative to the file)."""
    path = Path(path).resolve()
    if path in _seen:
        raise TaggerError(f"{path}: circular 'extends' chain")
    data = _read_yaml(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise TaggerError(f"{path}: 'extends' must be a path string")
    base = load_raw((path.parent / parent), (*_seen, path))
    return _deep_merge(base, data)


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``a.b.c=value`` overrides; values are parsed as YAML (numbers, lists, booleans)."""
    raw = dict(raw)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise TaggerError(f"--set {item!r}: expected KEY=VALUE, e.g. model.params.C=2.0")
        parts = key.strip().split(".")
        node = raw
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {} if child is None else child
                if not isinstance(child, dict):
                    raise TaggerError(f"--set {item!r}: '{part}' is not a section")
            node[part] = dict(child)
            node = node[part]
        node[parts[-1]] = load_yaml(value, f"--set {item!r}", "cannot parse the value as YAML")
    return raw


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """The valid field names of the pydantic model found by walking ``loc``."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        fields = getattr(current, "model_fields", {})
        if part not in fields:
            break
        annotation = fields[part].annotation
        current = _first_model(annotation)
        if current is None:
            return []
    return list(getattr(current, "model_fields", {}).keys())


def _first_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _first_model(arg)
        if found is not None:
            return found
    return None


def format_validation_error(exc: ValidationError, model: type[BaseModel], prefix: tuple = ()) -> str:
    """One readable line per problem, naming the key path and suggesting the closest valid key."""
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        path = ".".join(str(p) for p in (*prefix, *loc))
        if err["type"] == "extra_forbidden":
            valid = _fields_at(model, loc[:-1])
            hint = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.5)
            suggestion = f"; did you mean '{hint[0]}'?" if hint else ""
            lines.append(f"unknown key '{path}'{suggestion} (valid keys: {', '.join(valid)})")
        elif err["type"] == "missing":
            lines.append(f"missing required key '{path}'")
        else:
            got = reprlib.repr(err.get("input"))  # short: a value is shown, never a whole file or expansion
            lines.append(f"'{path}': {err['msg']} (got {got})")
    return "; ".join(lines)


def _validate_section(model: type[BaseModel], data: dict, prefix: tuple) -> BaseModel:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ValueError(format_validation_error(exc, model, prefix)) from None


def resolve_paths(config: Config, base: Path) -> Config:
    """Make data paths absolute: relative paths are taken from the project root, else ``base``."""

    def fix(p: Path) -> Path:
        if p.is_absolute():
            return p
        for root in (Path.cwd(), base, PROJECT_ROOT):
            if (root / p).exists():
                return (root / p).resolve()
        return (Path.cwd() / p).resolve()

    if isinstance(config.data.train, dict):
        config.data.train = {name: fix(path) for name, path in config.data.train.items()}
    else:
        config.data.train = fix(config.data.train)
    for s in config.evaluation.sets:
        s.path = fix(s.path)
    return config


def validate(raw: dict, source: str = "config") -> Config:
    """Validate a raw config mapping; every problem is reported at once with its key path."""
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        messages = []
        for err in exc.errors():
            if err["type"] == "value_error" and err["loc"] == ():
                messages.append(str(err["ctx"]["error"]) if "ctx" in err else err["msg"])
        if messages:
            raise TaggerError(f"{source}: " + "; ".join(messages)) from None
        raise TaggerError(f"{source}: {format_validation_error(exc, Config)}") from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read, merge, override and validate a config file."""
    path = Path(path)
    base = load_raw(path)
    raw = apply_overrides(base, overrides or [])
    try:
        config = validate(raw, source=str(path))
    except TaggerError as exc:
        if overrides and _is_valid(base):  # the file is fine on its own: the --set values are at fault
            given = " ".join(f"--set {item}" for item in overrides)
            raise TaggerError(str(exc).replace(str(path), given, 1)) from None
        raise
    return resolve_paths(config, path.resolve().parent)


def _is_valid(raw: dict) -> bool:
    try:
        Config.model_validate(raw)
    except ValidationError:
        return False
    return True


def dump_config(config: Config) -> str:
    """The resolved config as YAML, as saved with each run."""
    data = config.model_dump(mode="json", exclude={"extends"})
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
