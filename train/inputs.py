"""User input for the commands: sentence files, output paths and the admin token, checked before any work."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from train.errors import TaggerError


def read_utf8(path: Path, what: str = "file") -> str:
    """The text of a UTF-8 file; one clear line when it is missing or not UTF-8 (``what``: e.g. "config file")."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TaggerError(f"{path}: {what} not found") from None
    except UnicodeDecodeError as exc:
        raise TaggerError(f"{path}: not valid UTF-8 (byte {exc.start}): {exc.reason}") from None


def read_source(source: str) -> tuple[str, str]:
    """Text of a file (or stdin for '-') and its display name; clear errors for missing or non-UTF-8 input."""
    if source == "-":
        raw, name = sys.stdin.buffer.read(), "<stdin>"
    else:
        path = Path(source)
        if not path.is_file():
            raise TaggerError(f"{source}: file not found")
        raw, name = path.read_bytes(), source
    try:
        return raw.decode("utf-8"), name
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise TaggerError(f"{name} line {line}: not valid UTF-8") from None


def read_sentences(source: str) -> list[dict]:
    """JSON Lines objects with ``text`` (and optional ``target``), or plain lines of text."""
    text, name = read_source(source)
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TaggerError(f"{name} line {number}: invalid JSON: {exc.msg}") from None
            if not isinstance(row.get("text"), str) or not row["text"].strip():
                raise TaggerError(f"{name} line {number}: missing or empty 'text'")
        else:
            row = {"text": line.strip()}
        rows.append(row)
    if not rows:
        raise TaggerError(f"{name}: no input sentences")
    return rows


def check_writable_file(path: str, option: str) -> None:
    """Fail before any work when an output file could not be written (no folder, a folder in the way)."""
    target = Path(path)
    if target.is_dir():
        raise TaggerError(f"{option} {path}: is a folder, expected a file path")
    if not target.parent.is_dir():
        raise TaggerError(f"{option} {path}: folder {target.parent} does not exist")
    if not os.access(target.parent, os.W_OK):
        raise TaggerError(f"{option} {path}: folder {target.parent} is not writable")


def check_writable_folder(path: str, option: str) -> None:
    """Fail before any work when an output folder could not be created or written."""
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise TaggerError(f"{option} {path}: exists and is not a folder")
    existing = next((p for p in (target, *target.parents) if p.exists()), Path("."))
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise TaggerError(f"{option} {path}: cannot create it under {existing}")


def read_admin_token(path: str | None) -> str | None:
    """The admin token from ``path``, else ``$TAGGER_ADMIN_TOKEN``; at least 16 characters; None if neither."""
    if path is not None:
        try:
            token = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise TaggerError(f"--admin-token-file {path}: cannot read it ({exc.strerror})") from None
        source = f"--admin-token-file {path}"
    else:
        token = os.environ.get("TAGGER_ADMIN_TOKEN", "").strip()
        source = "TAGGER_ADMIN_TOKEN"
        if not token:
            return None
    if len(token) < 16:
        raise TaggerError(f"{source}: the admin token needs at least 16 characters")
    return token
