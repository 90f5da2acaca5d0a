"""The seed articles re-split exactly into the labelled evaluation file."""

from pathlib import Path

from conftest import SEEDS_FILE, read_jsonl

from train.data.sentences import is_boilerplate, split_files, split_text

ROOT = Path(__file__).resolve().parent.parent


def test_resplit_matches_labelled_seeds():
    labelled = read_jsonl(SEEDS_FILE)
    split = [s for sentences, _ in split_files((ROOT / "seeds").glob("*.txt")) for s in sentences]
    assert [(s.id, s.doc_id, s.text) for s in split] == [(r["id"], r["doc_id"], r["text"]) for r in labelled]


def test_offsets_point_into_the_article():
    for path in sorted((ROOT / "seeds").glob("*.txt")):
        text = path.read_text(encoding="utf-8")
        sentences, _ = split_text(text, path.stem)
        assert sentences
        for s in sentences:
            assert text[s.start : s.end] == s.text
            assert s.text == s.text.strip()


def test_boilerplate_is_dropped_and_reported():
    text = "Talks resumed in Ankara on Monday.\n\nLeave a Comment\n\nScroll to Top\n"
    sentences, dropped = split_text(text, "007_x")
    assert [s.text for s in sentences] == ["Talks resumed in Ankara on Monday."]
    assert [(d.line, d.text) for d in dropped] == [(3, "Leave a Comment"), (5, "Scroll to Top")]
    assert is_boilerplate("Your email address will not be published. Required fields are marked *")
    assert not is_boilerplate("Leave a comment on the tariff plan was all the minister said.")


def test_headlines_and_abbreviations():
    text = "Iran and Iraq sign rail deal\nThe U.S. troops stayed. Talks went on in Baghdad."
    sentences, _ = split_text(text, "d")
    assert [s.text for s in sentences] == [
        "Iran and Iraq sign rail deal",
        "The U.S. troops stayed.",
        "Talks went on in Baghdad.",
    ]
    assert [s.id for s in sentences] == ["d-00", "d-01", "d-02"]
