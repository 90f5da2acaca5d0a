"""Split articles into sentences with character offsets, after a documented boilerplate-cleaning step.

Sentence boundaries come from pysbd (Python Sentence Boundary Disambiguation): a maintained,
rule-based port of the Golden Rules segmenter. It needs no model download (we work offline), is
deterministic, handles abbreviations such as "U.S." and "Maj.-Gen." and quotes well, and can
return character spans, so every sentence keeps exact offsets into the original file.
Each non-empty line is segmented on its own: news articles put headlines and sub-headings on
lines without a final full stop, and they must not be glued onto the next paragraph.

Two guards keep splitting safe on any input:

- pysbd's ``Segmenter`` keeps per-call state on the instance, so each thread gets its own
  (a shared one returned wrong splits under concurrency);
- pysbd's cost grows with the square of the text it is given, so a line longer than
  ``WINDOW_CHARS`` is cut into windows first (after the last sentence-final mark, else the last
  space), which makes splitting linear in the text length; a sentence longer than
  ``MAX_SENTENCE_CHARS`` is cut at the last space before that bound. An optional deadline stops
  work on a text that takes too long.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import pysbd

from train.errors import DeadlineExceeded, TaggerError

WINDOW_CHARS = 2_000  # longest piece of a line handed to pysbd at once
MAX_SENTENCE_CHARS = 1_000  # longer sentences are cut at a space before this bound

# Characters that show nothing: whitespace, controls, zero-width and other format characters.
_INVISIBLE = r"\s\x00-\x1f\x7f-\x9f\u00ad\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u206a-\u206f\ufeff"
_VISIBLE = re.compile(f"[^{_INVISIBLE}]")
_SENTENCE_END = re.compile(r"[.!?。！？][\"'”’)\]]*\s+")
_SPACE = re.compile(r"\s+")

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


def is_blank(text: str) -> bool:
    """True when ``text`` shows nothing: only whitespace, zero-width, control or format characters."""
    return _VISIBLE.search(text) is None


_local = threading.local()


def _segmenter(language: str) -> pysbd.Segmenter:
    """This thread's pysbd segmenter for ``language`` (an instance is not safe to share between threads)."""
    cache = _local.__dict__.setdefault("segmenters", {})
    if language not in cache:
        cache[language] = pysbd.Segmenter(language=language, clean=False, char_span=True)
    return cache[language]


def _cut_points(text: str, bound: int, prefer: re.Pattern[str] | None) -> Iterator[tuple[int, int]]:
    """``(start, end)`` pieces of ``text``, each at most ``bound`` characters.

    A piece ends after the last match of ``prefer`` inside the bound, else after the last run of
    spaces, else exactly at the bound (a single token longer than the bound).
    """
    start = 0
    while len(text) - start > bound:
        limit = start + bound
        end = None
        if prefer is not None:
            for match in prefer.finditer(text, start + 1, limit):
                end = match.end()
        if end is None:
            for match in _SPACE.finditer(text, start + 1, limit):
                end = match.end()
        if end is None or end <= start:
            end = limit
        yield start, end
        start = end
    yield start, len(text)


def _spans(line: str, language: str, deadline: float | None) -> Iterator[tuple[int, str]]:
    """``(offset, raw sentence)`` for one line: pysbd on bounded windows, long sentences cut."""
    for window_start, window_end in _cut_points(line, WINDOW_CHARS, _SENTENCE_END):
        if deadline is not None and time.monotonic() > deadline:
            raise DeadlineExceeded("sentence splitting ran past the deadline")
        for span in _segmenter(language).segment(line[window_start:window_end]):
            raw = span.sent
            for start, end in _cut_points(raw, MAX_SENTENCE_CHARS, None):
                yield window_start + span.start + start, raw[start:end]


def split_text(
    text: str, doc_id: str = "doc", language: str = "en", deadline: float | None = None
) -> tuple[list[Sentence], list[DroppedLine]]:
    """Split ``text`` into sentences; return them with the boilerplate lines that were dropped.

    Sentence ids are ``<first 3 chars of doc_id>-<index:02d>`` when the doc id starts with a
    number prefix such as ``004_...``, else ``<doc_id>-<index:02d>``. ``deadline`` is a
    ``time.monotonic()`` value after which ``DeadlineExceeded`` is raised.
    """
    sentences: list[Sentence] = []
    dropped: list[DroppedLine] = []
    prefix = doc_id.split("_", 1)[0] if "_" in doc_id else doc_id
    offset = 0
    for line_no, line in enumerate(text.splitlines(keepends=True), start=1):
        line_start = offset
        offset += len(line)
        if is_blank(line):
            continue
        if is_boilerplate(line):
            dropped.append(DroppedLine(doc_id=doc_id, line=line_no, text=line.strip()))
            continue
        for span_start, raw in _spans(line.rstrip("\r\n"), language, deadline):
            stripped = raw.strip()
            if is_blank(stripped):
                continue
            start = line_start + span_start + (len(raw) - len(raw.lstrip()))
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
    from train.inputs import read_utf8

    text = read_utf8(path)
    if not text.strip():
        raise TaggerError(f"{path}: file is empty")
    return text


def split_files(paths: Iterable[Path]) -> Iterator[tuple[list[Sentence], list[DroppedLine]]]:
    """Split each article file; the doc id is the file name without its extension."""
    for path in sorted(paths):
        yield split_text(read_article(path), doc_id=path.stem)
