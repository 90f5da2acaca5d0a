"""This process and its leftovers: whether a process still runs, and a private temporary folder per command.

Libraries (MLflow above all) create temporary folders they remove only when they finish; a command
killed with ``kill -9``, or one that stops on a user error, would leave them behind. Every ``tagger``
command therefore works in ``$TMPDIR/tagger-<uid>/<pid>-<start time>``: removed when the command
exits (also on errors), and removed by the next command when the process that made it is gone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil

MARKER = "TAGGER_PRIVATE_TMPDIR"  # set while a command runs: nested commands and workers share its folder


def process_alive(pid: str | int | None, started: str | float | None) -> bool:
    """Whether process ``pid`` of this host still runs (and is the same process: ``started`` is its start time)."""
    try:
        process = psutil.Process(int(pid))
        return started is None or abs(process.create_time() - float(started)) < 1.0  # else the pid was reused
    except (TypeError, ValueError, psutil.NoSuchProcess):
        return False
    except psutil.AccessDenied:
        return True


def _remove_dead(root: Path) -> None:
    """Remove the folders of ``root`` whose process is gone."""
    for entry in root.iterdir():
        pid, _, started = entry.name.partition("-")
        if started and not process_alive(pid, started):
            shutil.rmtree(entry, ignore_errors=True)


def _remove(folder: Path, root: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    with contextlib.suppress(OSError):
        root.rmdir()  # only when no other command is using it


def _make_private(root: Path) -> Path | None:
    """This process's folder under ``root`` (created), after removing the folders of dead processes."""
    mine = root / f"{os.getpid()}-{psutil.Process().create_time():.2f}"
    try:
        for _ in range(3):  # another command may remove an empty root between the two calls
            root.mkdir(mode=0o700, exist_ok=True)
            try:
                mine.mkdir(mode=0o700)
                break
            except FileNotFoundError:
                continue
        else:
            return None
        _remove_dead(root)
    except OSError:
        return None  # an unwritable temporary folder: commands fail later with their own message
    return mine


@contextlib.contextmanager
def private_tempdir() -> Iterator[Path | None]:
    """Within: ``tempfile`` and ``$TMPDIR`` (inherited by worker processes) point at this command's own
    folder; after: the folder is removed and both are restored (the CLI may run inside another program)."""
    if os.environ.get(MARKER):  # nested (a worker, or a command run by a command): share the outer folder
        yield None
        return
    root = Path(tempfile.gettempdir()) / f"tagger-{os.getuid()}"
    mine = _make_private(root)
    if mine is None:
        yield None
        return
    saved = {name: os.environ.get(name) for name in ("TMPDIR", MARKER)}
    saved_tempdir = tempfile.tempdir
    os.environ["TMPDIR"] = os.environ[MARKER] = str(mine)
    tempfile.tempdir = str(mine)
    try:
        yield mine
    finally:
        tempfile.tempdir = saved_tempdir
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        _remove(mine, root)
