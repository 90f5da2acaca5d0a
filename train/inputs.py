"""User input for the commands: sentence files, output paths and the admin token, checked before any work."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import sys
from pathlib import Path

import yaml

from train.errors import TaggerError

MAX_CONFIG_BYTES = 1 << 20  # a config, an ``extends`` parent or a sweep space
MAX_TOKEN_BYTES = 4096  # an admin token file
MAX_DATA_BYTES = 4 << 30  # a dataset or sentences file


def read_user_file(path: str | Path, what: str = "file", max_bytes: int = MAX_CONFIG_BYTES) -> bytes:
    """The bytes of a file the user named: a regular file of at most ``max_bytes``, else one clear line.

    Folders, FIFOs, sockets and devices are refused without blocking (``/dev/zero``, a FIFO with no
    writer); messages name the file and never show its contents.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise TaggerError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise TaggerError(f"{path}: is a folder, expected a {what}") from None
    except OSError as exc:
        raise TaggerError(f"{path}: cannot read the {what} ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as handle:
        _require_regular(os.fstat(fd), path, what, max_bytes)
        try:
            data = handle.read(max_bytes + 1)
        except OSError as exc:
            raise TaggerError(f"{path}: cannot read the {what} ({exc.strerror})") from None
    if len(data) > max_bytes:  # it grew since fstat
        raise TaggerError(f"{path}: the {what} is over the size limit of {max_bytes:,} bytes")
    return data


def check_user_file(path: str | Path, what: str = "data file", max_bytes: int = MAX_DATA_BYTES) -> int:
    """Check, without reading it, that ``path`` is a regular file of at most ``max_bytes``; return its size."""
    path = Path(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise TaggerError(f"{path}: {what} not found") from None
    except OSError as exc:
        raise TaggerError(f"{path}: cannot read the {what} ({exc.strerror})") from None
    _require_regular(info, path, what, max_bytes)
    return info.st_size


def _require_regular(info: os.stat_result, path: Path, what: str, max_bytes: int) -> None:
    """A regular file of at most ``max_bytes``, else one line naming ``path``."""
    if stat.S_ISDIR(info.st_mode):
        raise TaggerError(f"{path}: is a folder, expected a {what}")
    if not stat.S_ISREG(info.st_mode):
        raise TaggerError(f"{path}: not a regular file (a device, FIFO or socket), expected a {what}")
    if info.st_size > max_bytes:
        raise TaggerError(f"{path}: the {what} is over the size limit of {max_bytes:,} bytes")


def read_utf8(path: Path, what: str = "file", max_bytes: int = MAX_CONFIG_BYTES) -> str:
    """The text of a UTF-8 file the user named (see ``read_user_file``); one clear line when it is not UTF-8."""
    raw = read_user_file(path, what, max_bytes)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise TaggerError(f"{path} line {line}: not valid UTF-8 (byte {exc.start}): {exc.reason}") from None


class _NoAliasLoader(yaml.SafeLoader):
    """PyYAML's safe loader without aliases: ``*name`` is refused, so a small file cannot expand to gigabytes."""

    def compose_node(self, parent, index):  # noqa: ANN001, ANN201 (PyYAML's signature)
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(None, None, "YAML aliases (*name) are not allowed", mark)
        return super().compose_node(parent, index)


YAML_SUFFIXES = (".yaml", ".yml")


def load_yaml(text: str, name: str, failure: str = "invalid YAML") -> object:
    """Parse YAML the user gave (no aliases, no Python tags); an error is one line:
    ``<name>: [line N ]<failure>: <problem>``."""
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1} " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise TaggerError(f"{name}: {where}{failure}: {problem}") from None


def read_yaml(path: Path, what: str = "config file") -> object:
    """A YAML file the user named (ending in .yaml or .yml), read with ``read_utf8``, parsed with ``load_yaml``."""
    if path.suffix.lower() not in YAML_SUFFIXES:
        raise TaggerError(f"{path}: a {what} must end in .yaml or .yml")
    return load_yaml(read_utf8(path, what), str(path))


MAX_JSON_DEPTH = 32  # deeper JSON values are refused: Python, Arrow and Parquet fail or crawl on them


def too_deep(row: dict, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether a JSON object nests lists or objects more than ``limit`` levels below its fields."""
    layer = [value for value in row.values() if isinstance(value, (dict, list))]
    depth = 0
    while layer:
        depth += 1
        if depth > limit:
            return True
        layer = [
            child
            for item in layer
            for child in (item.values() if isinstance(item, dict) else item)
            if isinstance(child, (dict, list))
        ]
    return False


def read_source(source: str) -> tuple[str, str]:
    """Text of a file (or stdin for '-') and its display name; clear errors for missing or non-UTF-8 input."""
    if source == "-":
        raw, name = sys.stdin.buffer.read(), "<stdin>"
    else:
        raw, name = read_user_file(source, "input file", MAX_DATA_BYTES), source
    try:
        return raw.decode("utf-8"), name
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise TaggerError(f"{name} line {line}: not valid UTF-8") from None


def read_sentences(source: str) -> list[dict]:
    """JSON Lines objects with ``text`` (and optional ``target``), or plain lines of text."""
    import orjson

    text, name = read_source(source)
    rows = []
    loads, decode_error = orjson.loads, orjson.JSONDecodeError
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")  # not str.splitlines: U+2028 is no break
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped[0] == "{":
            try:
                row = loads(line)
            except decode_error:  # json's reading and messages: it also takes NaN and lone surrogates
                row = _json_line(line, name, number)
            value = row.get("text")
            if not isinstance(value, str) or not value.strip():
                raise TaggerError(f"{name} line {number}: missing or empty 'text'")
        else:
            row = {"text": stripped}
        rows.append(row)
    if not rows:
        raise TaggerError(f"{name}: no input sentences")
    return rows


def _json_line(line: str, name: str, number: int) -> dict:
    """A line orjson refused, read by ``json`` (which takes ``NaN``); its message names the line, and a value
    the output cannot hold (a lone surrogate, an integer over 64 bits) is refused here, not when writing."""
    import orjson

    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise TaggerError(f"{name} line {number}: invalid JSON: {exc.msg}") from None
    try:
        orjson.dumps(row)
    except orjson.JSONEncodeError as exc:
        if "surrogate" in str(exc):
            raise TaggerError(
                f"{name} line {number}: a string holds a lone surrogate (an unpaired \\uD800-\\uDFFF escape)"
            ) from None
        raise TaggerError(f"{name} line {number}: a value that JSON output cannot hold ({exc})") from None
    return row


def _probe_folder(folder: Path, path: str, option: str) -> None:
    """Create and remove a scratch file in ``folder``: permission bits do not tell (root, /proc, read-only mounts)."""
    import tempfile

    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".tagger-probe-"):
            pass
    except OSError as exc:
        raise TaggerError(f"{option} {path}: cannot write in {folder} ({exc.strerror})") from None


def check_writable_file(path: str, option: str) -> None:
    """Fail before any work when an output file could not be written (no folder, a folder or device in the way)."""
    target = Path(path)
    if target.is_dir():
        raise TaggerError(f"{option} {path}: is a folder, expected a file path")
    if target.exists() and not target.is_file():
        raise TaggerError(f"{option} {path}: not a regular file (a device, FIFO or socket)")
    if not target.parent.is_dir():
        where = "is not a folder" if target.parent.exists() else "does not exist"
        raise TaggerError(f"{option} {path}: {target.parent} {where}")
    _probe_folder(target.parent, path, option)


def check_writable_folder(path: str, option: str) -> None:
    """Fail before any work when an output folder could not be created or written."""
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise TaggerError(f"{option} {path}: exists and is not a folder")
    existing = next((p for p in (target, *target.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise TaggerError(f"{option} {path}: cannot create it under {existing} (not a folder)")
    _probe_folder(existing, path, option)


def write_text_file(path: str | Path, text: str, option: str) -> None:
    """Write ``text`` to a new file beside ``path`` and rename it into place: never a half-written file."""
    import tempfile

    target = Path(path)
    try:
        with tempfile.NamedTemporaryFile(
            "w", encoding="utf-8", dir=target.parent, delete=False, prefix=f".{target.name}.", suffix=".tmp"
        ) as handle:
            handle.write(text)
        os.replace(handle.name, target)
    except OSError as exc:
        with contextlib.suppress(NameError, OSError):
            os.unlink(handle.name)
        raise TaggerError(f"{option} {path}: cannot write it ({exc.strerror})") from None


def read_admin_token(path: str | None) -> str | None:
    """The admin token from ``path``, else ``$TAGGER_ADMIN_TOKEN``; at least 16 characters; None if neither."""
    if path is not None:
        source = f"--admin-token-file {path}"
        raw = read_user_file(path, "admin token file", MAX_TOKEN_BYTES)
        try:
            token = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise TaggerError(f"{source}: not a text file (not valid UTF-8)") from None
    else:
        token = os.environ.get("TAGGER_ADMIN_TOKEN", "").strip()
        source = "TAGGER_ADMIN_TOKEN"
        if not token:
            return None
    if not token.isprintable() or any(c.isspace() for c in token):
        raise TaggerError(f"{source}: the admin token must be one word of printable characters")
    if len(token) < 16:
        raise TaggerError(f"{source}: the admin token needs at least 16 characters")
    return token
