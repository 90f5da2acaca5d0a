"""The shipped pool of unlabelled real news sentences: schema, licences, no overlap with the labelled corpus,
no seed leaks, readable by ``tagger select``; and the collection script's parsing rules."""

import re

from collect_real_news import countries, day_stories, release_document, story_pairs
from conftest import ROOT, SEEDS_FILE, read_jsonl

from train.data.leakage import find_leaks, normalise
from train.selection.select import read_pool

POOL_FILE = ROOT / "data/pool/real_news_pool.jsonl"
FIELDS = ("id", "doc_id", "text", "target", "title", "date", "source", "licence")


def test_pool_rows_have_the_schema_and_open_licences():
    rows = read_jsonl(POOL_FILE)
    labelled_licences = {r["licence"] for r in read_jsonl(ROOT / "data/train/real_news.jsonl")}
    assert labelled_licences == {"public-domain", "CC BY-SA 4.0"}
    assert 2000 <= len(rows) <= 4000 and len({r["doc_id"] for r in rows}) >= 250
    assert len({r["id"] for r in rows}) == len(rows)
    for row in rows:
        assert set(FIELDS) <= set(row) and not {"topics", "stance", "suggested"} & set(row), row["id"]
        assert all(isinstance(row[f], str) and row[f].strip() for f in FIELDS), row["id"]
        assert row["licence"] in labelled_licences and row["id"].startswith(row["doc_id"] + "-")
        assert re.fullmatch(r"closer .+–.+ ties", row["target"]) and re.fullmatch(r"20\d\d-\d\d-\d\d", row["date"])
    assert POOL_FILE.stat().st_size < 3_000_000


def test_pool_does_not_overlap_the_first_labelling_and_later_rounds_come_from_it():
    rows = read_jsonl(POOL_FILE)
    corpus = read_jsonl(ROOT / "data/train/real_news.jsonl")
    labelled = [r for r in corpus if r["round"] == 0] + read_jsonl(ROOT / "data/annotation/real_news_sentences.jsonl")
    pool_rows = {(r["id"], r["text"], r["target"]) for r in rows}
    later = [r for r in corpus if r["round"] > 0]
    assert later and all((r["id"], r["text"], r["target"]) in pool_rows for r in later)
    assert not {r["id"] for r in rows} & {r["id"] for r in labelled}
    assert not {r["doc_id"] for r in rows} & {r["doc_id"] for r in labelled}
    assert not {normalise(r["text"]) for r in rows} & {normalise(r["text"]) for r in labelled}
    urls = {r["source"].rsplit("original ", 1)[-1] for r in labelled if r["licence"] == "public-domain"}
    assert not {r["source"].rsplit("original ", 1)[-1] for r in rows if r["licence"] == "public-domain"} & urls


def test_pool_does_not_leak_seeds():
    texts = sorted({r["text"] for r in read_jsonl(POOL_FILE)})
    leaks = find_leaks(texts, [r["text"] for r in read_jsonl(SEEDS_FILE)], threshold=0.8)
    assert leaks == [], [(leak.train_text, leak.eval_text) for leak in leaks[:5]]


def test_select_reads_the_pool_once_per_sentence_and_target():
    rows = read_jsonl(POOL_FILE)
    pool = read_pool(POOL_FILE, "closer Iran–Iraq ties")
    assert len(pool.records) == len({(r["text"], r["target"]) for r in rows})
    assert {r["doc_id"] for r in pool.records} == {r["doc_id"] for r in rows}
    rest = read_pool(POOL_FILE, "closer Iran–Iraq ties", exclude=(ROOT / "data/train/real_news.jsonl",))
    assert len(rest.records) == len(pool.records) - 300  # round 1 of the labelled corpus came from the pool


def test_countries_and_pairs_of_a_story():
    assert countries("Indian and Chinese troops; the U.S. and Papua New Guinea") == [
        "India", "China", "United States", "Papua New Guinea"
    ]
    assert countries("Georgia Tech and the Indo-Pacific") == []
    page = (
        "#### International relations\n"
        "* [India–Pakistan relations](https://en.wikipedia.org/wiki/x)\n"
        "  * India and Pakistan agree to reopen the Kartarpur corridor for pilgrims. [(Reuters)](https://r.example)\n"
        "#### Sports\n"
        "* A marathon is held in Berlin. [(AP)](https://ap.example)\n"
    )
    stories = day_stories(page)
    story = stories["International relations"][0]
    assert story["heads"] == ["India–Pakistan relations"]
    assert story["items"] == ["India and Pakistan agree to reopen the Kartarpur corridor for pilgrims."]
    assert story_pairs(story) == [["India", "Pakistan"]]
    assert stories["Sports"][0]["items"] == ["A marathon is held in Berlin."]


def test_release_rules_drop_bylines_and_transcripts():
    item = {
        "title": "Kenya National Day",
        "link": "https://www.state.gov/kenya-national-day/",
        "pubDate": "Wed, 01 Jun 2022 12:00:00 +0000",
        "creator": "Antony J. Blinken, Secretary of State",
        "content": "<p>Antony J. Blinken, Secretary of State</p><p>The United States congratulates the people of "
        "Kenya.</p><p>Kenya is a strong partner.</p><p>For further information, contact us.</p>",
        "commit": "0123456789abcdef",
    }
    doc = release_document(item)
    assert doc["lines"] == ["Kenya National Day", "The United States congratulates the people of Kenya.",
                            "Kenya is a strong partner."]
    assert doc["pairs"] == [["United States", "Kenya"]] and doc["date"] == "2022-06-01"
    assert doc["licence"] == "public-domain" and doc["source"].endswith("original " + item["link"])
    transcript = dict(item, content="<p>MR PRICE: Good afternoon, Kenya.</p>")
    assert release_document(transcript) is None
    assert release_document(dict(item, title="Secretary Blinken's Remarks on Kenya")) is None
