"""MkDocs hook: the config and family-params reference tables, generated from the pydantic models.

``<!-- config-reference -->`` becomes one row per config key of ``train.config.Config``;
``<!-- family-params: NAME -->`` one row per param of the family registered as NAME. Keys, types,
defaults and bounds come from the models; the meaning of each key comes from ``meanings.yml`` beside
this file. A key without a meaning, or a meaning for a key that no longer exists, fails the build, so
the reference cannot drift from the code.
"""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

MEANINGS = Path(__file__).with_name("meanings.yml")
CONFIG_MARKER = "<!-- config-reference -->"
FAMILY_MARKER = re.compile(r"<!-- family-params: ([a-z0-9_]+) -->")


class ReferenceError(Exception):
    """The code and meanings.yml disagree (raised at build time; mkdocs reports it)."""


def _load_meanings() -> dict:
    return yaml.safe_load(MEANINGS.read_text(encoding="utf-8"))


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside ``annotation`` (``X``, ``X | None``, ``list[X]``), else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _type_name(annotation: Any) -> str:
    """A short, readable name for a field's type."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(a) for a in args if a is not type(None)]
        text = " or ".join(names)
        return f"{text} or none" if type(None) in args else text
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (list, tuple):
        if origin is tuple and len(args) == 2 and args[0] == args[1]:
            return f"pair of {_type_name(args[0])}"
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return f"mapping to {_type_name(args[1])}" if args and args[1] is not Any else "mapping"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    names = {str: "text", int: "integer", float: "number", bool: "boolean", Path: "path"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _bounds(field: FieldInfo) -> str:
    """The numeric bounds pydantic enforces, e.g. ``> 0, ≤ 0.5``."""
    parts = []
    metadata = list(field.metadata)
    for arg in typing.get_args(field.annotation):  # dict[str, Annotated[float, Field(gt=0)]] and the like
        for inner in typing.get_args(arg) if typing.get_origin(arg) is typing.Annotated else ():
            metadata.extend(getattr(inner, "metadata", []) or [])
    for item in metadata:
        for attr, sign in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤")):
            value = getattr(item, attr, None)
            if value is not None:
                parts.append(f"{sign} {_number(value)}")
    return ", ".join(parts)


def _number(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10_000:
        return f"{value:,}"
    if isinstance(value, float) and value >= 1e5 and value == int(value):
        return f"10^{len(str(int(value))) - 1}" if str(int(value)).strip("0") == "1" else f"{int(value):,}"
    return str(value)


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "(required)"
    if field.default_factory is not None:
        value = field.default_factory()
    else:
        value = field.default
    if value is PydanticUndefined:
        return "(required)"
    if isinstance(value, BaseModel):
        return "(section)"
    if value is None:
        return "none"
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, bool):
        value = str(value).lower()
    return f"`{_number(value)}`"


def _rows(model: type[BaseModel], prefix: str, meanings: dict, used: set[str]) -> list[str]:
    """Table rows for every key of ``model``; a section with a meaning of its own is one row."""
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        sub = _model_of(field.annotation)
        if key in meanings:
            used.add(key)
            if sub is not None:  # a section described as a whole: list its keys' defaults
                default = ", ".join(f"`{k}` = {_default(f)}" for k, f in sub.model_fields.items())
            else:
                default = _default(field)
            rows.append(_row(key, _type_name(field.annotation), default, _bounds(field), meanings[key]))
        elif sub is not None:
            rows.extend(_rows(sub, f"{key}.", meanings, used))
        else:
            raise ReferenceError(f"docs/hooks/meanings.yml: config key '{key}' has no meaning (add it under config:)")
    return rows


def _row(key: str, kind: str, default: str, bounds: str, meaning: str) -> str:
    cells = [f"`{key}`", kind, default, bounds, " ".join(str(meaning).split())]
    return "| " + " | ".join(cell.replace("\n", " ") for cell in cells) + " |"


HEADER = "| key | type | default | bounds | meaning |\n|---|---|---|---|---|"


def config_table(meanings: dict) -> str:
    """The config reference: every key of ``Config``, with its meaning."""
    from train.config import Config

    described = meanings["config"]
    used: set[str] = set()
    rows = _rows(Config, "", described, used)
    stale = sorted(set(described) - used)
    if stale:
        raise ReferenceError(f"docs/hooks/meanings.yml: config keys that no longer exist: {', '.join(stale)}")
    return HEADER + "\n" + "\n".join(rows)


def family_table(name: str, meanings: dict, used: dict[str, set[str]]) -> str:
    """The params of one family; a param's meaning is the family's own, else the shared one."""
    from train.registry import model_params_schema

    params = meanings["params"]
    own, shared = params.get(name, {}), params["shared"]
    rows = []
    for key, field in model_params_schema(name).model_fields.items():
        source = name if key in own else "shared" if key in shared else None
        if source is None:
            raise ReferenceError(f"docs/hooks/meanings.yml: param '{key}' of family '{name}' has no meaning")
        used.setdefault(source, set()).add(key)
        meaning = (own if source == name else shared)[key]
        rows.append(_row(key, _type_name(field.annotation), _default(field), _bounds(field), meaning))
    return HEADER.replace("| key |", "| param |") + "\n" + "\n".join(rows)


def builtin_families() -> list[str]:
    """The families tagger ships, as the registry lists them."""
    from train import registry

    return sorted(registry.BUILTIN_FAMILIES)


def on_page_markdown(markdown: str, page, config, files) -> str:
    """Replace the markers with generated tables; check the families page covers every family."""
    if CONFIG_MARKER not in markdown and not FAMILY_MARKER.search(markdown):
        return markdown
    meanings = _load_meanings()
    if CONFIG_MARKER in markdown:
        markdown = markdown.replace(CONFIG_MARKER, config_table(meanings))
    found = FAMILY_MARKER.findall(markdown)
    if found:
        missing = sorted(set(builtin_families()) - set(found))
        if missing:
            raise ReferenceError(f"{page.file.src_uri}: no '<!-- family-params: NAME -->' for {', '.join(missing)}")
        used: dict[str, set[str]] = {}
        markdown = FAMILY_MARKER.sub(lambda m: family_table(m.group(1), meanings, used), markdown)
        stale = [
            f"{family}.{key}"
            for family, described in meanings["params"].items()
            for key in described
            if key not in used.get(family, set())
        ]
        if stale:
            raise ReferenceError(f"docs/hooks/meanings.yml: params that no family has: {', '.join(sorted(stale))}")
    return markdown
