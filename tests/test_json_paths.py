"""The JSON paths read and write with orjson: same rows and messages as ``json``, valid JSON Lines out."""

from __future__ import annotations

import json

import numpy as np
import pytest

from train.batch import json_rows
from train.errors import TaggerError
from train.inputs import read_sentences
from train.outputs import json_lines, paused_gc, rounded_scores

ROWS = [
    {"text": "Gas talks resumed in Ankara.", "target": "closer Turkey–Iraq ties", "id": 1},
    {"text": "Caf\u00e9 \u2603 \U0001f600 \u2028 quotes \" and \\ backslashes", "n": 1.5, "tags": ["a", {"b": None}]},
    {"text": "Big numbers", "n": 12345678901234, "x": -0.0, "t": True},
]


def test_sentences_are_read_as_json_reads_them(tmp_path):
    source = tmp_path / "in.jsonl"
    lines = [json.dumps(row, ensure_ascii=ascii) for row in ROWS for ascii in (True, False)]
    source.write_text("\n".join([*lines, "", "  a plain line  ", '  {"text": "indented"}']) + "\n", encoding="utf-8")
    expected = [row for row in ROWS for _ in (True, False)] + [{"text": "a plain line"}, {"text": "indented"}]
    assert read_sentences(str(source)) == expected


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"text": "cut off', "line 2: invalid JSON: Unterminated string starting at"),
        ('{"text": "x"} trailing', "line 2: invalid JSON: Extra data"),
        ('{"text": "  "}', "line 2: missing or empty 'text'"),
        ('{"text": 5}', "line 2: missing or empty 'text'"),
        ('{"text": "bad \\ud800 here"}', "line 2: a string holds a lone surrogate"),
    ],
)
def test_a_bad_sentence_line_is_one_error_naming_it(tmp_path, line, message):
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "fine"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(TaggerError) as caught:
        read_sentences(str(source))
    assert str(caught.value).startswith(f"{source} {message}") and "\n" not in str(caught.value)


def test_nan_is_still_read_and_written_as_null(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "a", "x": NaN}\n', encoding="utf-8")
    rows = read_sentences(str(source))
    assert np.isnan(rows[0]["x"]) and json.loads(json_lines(rows)) == {"text": "a", "x": None}


def test_batch_json_rows_match_json_and_keep_their_line_numbers(tmp_path):
    source = tmp_path / "in.jsonl"
    body = "\n".join(json.dumps(row, ensure_ascii=False) for row in ROWS)
    source.write_bytes(b"\xef\xbb\xbf" + body.replace("\n", "\n\n").encode() + b"\n")
    assert list(json_rows(source)) == [(1, ROWS[0]), (3, ROWS[1]), (5, ROWS[2])]


def test_json_lines_are_valid_utf8_json_one_per_line():
    rows = [*ROWS, {"scores": {"a": np.float32(0.25), "b": 1e-4}, "list": np.array([1, 2])}]
    out = json_lines(rows)
    assert out.endswith(b"\n") and out.count(b"\n") == len(rows)
    parsed = [json.loads(line.decode("utf-8")) for line in out.split(b"\n")[:-1]]  # U+2028 stays inside its line
    assert parsed[:3] == ROWS and parsed[3] == {"scores": {"a": 0.25, "b": 0.0001}, "list": [1, 2]}


def test_scores_are_rounded_to_four_decimals_in_label_order():
    proba = np.random.default_rng(0).random((500, 3))
    scores = rounded_scores(["x", "y", "z"], proba)
    assert [list(row) for row in scores[:2]] == [["x", "y", "z"]] * 2
    got = np.array([list(row.values()) for row in scores])
    assert np.abs(got - proba).max() <= 0.5e-4 + 1e-12
    assert all(len(repr(value).split(".")[1]) <= 4 for row in scores for value in row.values())
    with pytest.raises(ValueError):
        rounded_scores(["x", "y"], proba)


def test_paused_gc_restores_the_collector():
    import gc

    with paused_gc():
        assert not gc.isenabled()
    assert gc.isenabled()
