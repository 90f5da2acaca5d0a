"""Search spaces for ``tagger sweep``: YAML files that map config keys to ranges, checked against a config.

```yaml
objective: cv/f1_macro_mean          # optional; any cv/<metric>_mean or _std a CV logs
direction: maximize                  # optional; minimize for losses by default
params:
  model.params.C: {type: float, low: 0.25, high: 16, log: true}
  model.params.min_df: {type: int, low: 1, high: 3}
  model.params.word_ngram_range: {type: categorical, choices: [[1, 1], [1, 2]]}
```

Before anything runs, every key is tried on the config with its bounds and each choice, so an
unknown key gets the config's own did-you-mean error and a value the family refuses is named.
"""

from __future__ import annotations

import difflib
import json
import reprlib
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from train.config import Config, apply_overrides, format_validation_error, resolve_paths, validate
from train.errors import TaggerError

SWEEPABLE = ("model.", "decision.")  # a trial changes the model, never its data, folds or evaluation


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # bounds are finite numbers


class FloatRange(_Strict):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _bounds(self) -> FloatRange:
        check_bounds(self.low, self.high, self.log, self.step)
        return self

    def suggest(self, trial, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, log=self.log, step=self.step)

    def values(self) -> list[Any]:
        return [self.low, self.high]


class IntRange(_Strict):
    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _bounds(self) -> IntRange:
        check_bounds(self.low, self.high, self.log, None if self.step == 1 else self.step)
        return self

    def suggest(self, trial, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, log=self.log, step=self.step)

    def values(self) -> list[Any]:
        return [self.low, self.high]


class Categorical(_Strict):
    """Choices of any YAML value; lists (n-gram ranges) are offered to Optuna as their JSON text."""

    type: Literal["categorical"]
    choices: list[Any] = Field(min_length=1)

    @field_validator("choices")
    @classmethod
    def _json_choices(cls, value: list[Any]) -> list[Any]:
        for choice in value:
            try:
                json.dumps(choice, allow_nan=False)
            except (TypeError, ValueError):
                raise ValueError(
                    f"choice {reprlib.repr(choice)} is not a plain YAML value (number, text, list)"
                ) from None
        return value

    def suggest(self, trial, name: str) -> Any:
        return json.loads(trial.suggest_categorical(name, [json.dumps(c) for c in self.choices]))

    def values(self) -> list[Any]:
        return list(self.choices)


def check_bounds(low: float, high: float, log: bool, step: float | None) -> None:
    if low > high:
        raise ValueError(f"low ({low}) is above high ({high})")
    if log and low <= 0:
        raise ValueError(f"a log range needs low > 0 (got {low})")
    if log and step is not None:
        raise ValueError("a range is either log or stepped, not both")


Distribution = Annotated[FloatRange | IntRange | Categorical, Field(discriminator="type")]


class Space(_Strict):
    objective: str | None = None
    direction: Literal["maximize", "minimize"] | None = None
    params: dict[str, Distribution] = Field(min_length=1)

    def suggest(self, trial) -> dict[str, Any]:
        """One value per key, chosen by the trial's sampler."""
        return {key: dist.suggest(trial, key) for key, dist in self.params.items()}

    def fingerprint(self) -> str:
        """The space as canonical JSON: a resumed study must be searched over the same space."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)


def load_space(path: str | Path) -> Space:
    """Read and validate a space file; every problem is one line naming the file and key."""
    path = Path(path)
    from train.inputs import read_yaml

    raw = read_yaml(path, "space file")
    if not isinstance(raw, dict):
        raise TaggerError(f"{path}: a space must be a mapping with a 'params' section")
    try:
        return Space.model_validate(raw)
    except ValidationError as exc:
        raise TaggerError(f"{path}: {_space_errors(exc)}") from None


def _space_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        # a distribution's errors carry the tag of the union member tried; drop it from the key path
        loc = [str(p) for p in err["loc"] if p not in ("float", "int", "categorical")]
        path = ".".join(loc)
        if err["type"] == "union_tag_invalid" or err["type"] == "union_tag_not_found":
            lines.append(f"'{path}': type must be float, int or categorical")
        elif err["type"] == "value_error":
            lines.append(f"'{path}': {err['ctx']['error']}")
        elif err["type"] in ("extra_forbidden", "missing"):
            lines.append(format_validation_error(ValidationError.from_exception_data("", [err]), Space))
        else:
            lines.append(f"'{path}': {err['msg']} (got {reprlib.repr(err.get('input'))})")
    return "; ".join(lines)


def trial_overrides(values: dict[str, Any]) -> list[str]:
    """``--set`` strings for a trial's values (JSON is YAML, so lists and strings survive)."""
    return [f"{key}={json.dumps(value)}" for key, value in values.items()]


def config_values(config: Config) -> dict:
    """The resolved config as plain values (JSON types): what a trial's values are set on, and what
    crosses to a sweep's worker processes."""
    return config.model_dump(mode="json", exclude={"extends"})


def config_with(values: dict, overrides: list[str], source: str = "config") -> Config:
    """``values`` (from ``config_values``) with ``--set``-style ``overrides``, validated."""
    return resolve_paths(validate(apply_overrides(values, overrides), source=source), Path.cwd())


def check_space(space: Space, config: Config, space_path: str | Path) -> None:
    """Try every key's bounds and choices on the config; the first value the config refuses is an error."""
    base = config_values(config)
    for key, dist in space.params.items():
        if not key.startswith(SWEEPABLE):
            raise TaggerError(
                f"{space_path}: params.{key}: only model.* and decision.* keys can be swept "
                "(a trial must use the same data, folds and evaluation)"
            )
        for value in dist.values():
            raw = apply_overrides(base, trial_overrides({key: value}))
            validate(raw, source=f"{space_path}: params.{key} = {json.dumps(value)}")


def objective_metrics(config: Config) -> list[str]:
    """The ``cv/<metric>_mean`` and ``_std`` names a cross-validation of ``config`` logs."""
    from train.evaluation.metrics import multiclass_metrics, multilabel_metrics

    labels = config.task.labels
    if config.task.type == "multilabel":
        names = multilabel_metrics(np.zeros((2, len(labels)), int), np.zeros((2, len(labels)), int), labels)
    else:
        names = multiclass_metrics(np.zeros(2, int), np.zeros(2, int), labels)
    return [f"cv/{name}_{stat}" for name in names for stat in ("mean", "std")]


def resolve_objective(config: Config, space: Space, given: str | None) -> tuple[str, str]:
    """The objective (``--objective``, else the space's, else ``cv/f1_macro_mean``) and its direction."""
    objective = given or space.objective or "cv/f1_macro_mean"
    known = objective_metrics(config)
    if objective not in known:
        hint = difflib.get_close_matches(objective, known, n=1, cutoff=0.6)
        suggestion = f"; did you mean '{hint[0]}'?" if hint else ""
        raise TaggerError(f"objective '{objective}' is not a metric a cross-validation logs{suggestion}")
    name = objective.removeprefix("cv/").rsplit("_", 1)[0]
    lower = name.endswith("loss") or objective.endswith("_std")
    return objective, space.direction or ("minimize" if lower else "maximize")
