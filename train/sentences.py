"""Split articles into sentences with character offsets, after a documented boilerplate-cleaning step.

Sentence boundaries come from pysbd (Python Sentence Boundary Disambiguation): a maintained,
rule-based port of the Golden Rules segmenter. It needs no model download (we work offline), is
deterministic, handles abbreviations such as "U.S." and "Maj.-Gen." and quotes well, and can
return character spans, so every sentence keeps exact offsets into the original file.
Each non-empty line is segmented on its own: news articles put headlines and sub-headings on
lines without a final full stop, and they must not be glued onto the next paragraph.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import pysbd

from train.errors import TaggerError

# Web-page furniture that scrapers leave in article text. Matched against a whole line (after
# stripping); such lines are dropped and reported, never silently lost.
BOILERPLATE_PATTERNS: tuple[re.Pattern[str], ...] = tuple(
    re.compile(p, re.IGNORECASE)
    for p in (
        r"leave a (comment|reply)",
        r"your email address will not be published\.?( required fields are marked \*)?",
        r"scroll to top",
        r"share (this|on \w+)",
        r"(click|tap) here to .*",
        r"(sign up|subscribe) (for|to) (our|the) newsletter.*",
        r"all rights reserved\.?",
        r"related (articles|posts|stories):?",
        r"advertisement",
    )
)


@dataclass(frozen=True)
class Sentence:
    """One sentence of a document, with its position in the source text."""

    id: str
    doc_id: str
    index: int
    start: int
    end: int
    text: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class DroppedLine:
    """A line removed by the cleaning step, kept for the report."""

    doc_id: str
    line: int
    text: str


def is_boilerplate(line: str) -> bool:
    """True when the whole line is web-page furniture rather than article text."""
    stripped = line.strip()
    return any(p.fullmatch(stripped) for p in BOILERPLATE_PATTERNS)


@lru_cache(maxsize=4)
def _segmenter(language: str) -> pysbd.Segmenter:
    return pysbd.Segmenter(language=language, clean=False, char_span=True)


def split_text(text: str, doc_id: str = "doc", language: str = "en") -> tuple[list[Sentence], list[DroppedLine]]:
    """Split ``text`` into sentences; return them with the boilerplate lines that were dropped.

    Sentence ids are ``<first 3 chars of doc_id>-<index:02d>`` when the doc id starts with a
    number prefix such as ``004_...``, else ``<doc_id>-<index:02d>``.
    """
    sentences: list[Sentence] = []
    dropped: list[DroppedLine] = []
    prefix = doc_id.split("_", 1)[0] if "_" in doc_id else doc_id
    offset = 0
    for line_no, line in enumerate(text.splitlines(keepends=True), start=1):
        line_start = offset
        offset += len(line)
        if not line.strip():
            continue
        if is_boilerplate(line):
            dropped.append(DroppedLine(doc_id=doc_id, line=line_no, text=line.strip()))
            continue
        for span in _segmenter(language).segment(line.rstrip("\r\n")):
            raw = span.sent
            stripped = raw.strip()
            if not stripped:
                continue
            start = line_start + span.start + (len(raw) - len(raw.lstrip()))
            end = start + len(stripped)
            index = len(sentences)
            sentences.append(
                Sentence(
                    id=f"{prefix}-{index:02d}",
                    doc_id=doc_id,
                    index=index,
                    start=start,
                    end=end,
                    text=text[start:end],
                )
            )
    return sentences, dropped


def read_article(path: Path) -> str:
    """Read a UTF-8 article, with a clear error for empty or non-UTF-8 files."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise TaggerError(f"{path}: file not found") from exc
    except UnicodeDecodeError as exc:
        raise TaggerError(f"{path}: not valid UTF-8 (byte {exc.start}): {exc.reason}") from exc
    if not text.strip():
        raise TaggerError(f"{path}: file is empty")
    return text


def split_files(paths: Iterable[Path]) -> Iterator[tuple[list[Sentence], list[DroppedLine]]]:
    """Split each article file; the doc id is the file name without its extension."""
    for path in sorted(paths):
        yield split_text(read_article(path), doc_id=path.stem)
