"""Build the real-news corpus from its sentences and labels, and measure the annotators' agreement.

    .venv/bin/python scripts/real_corpus.py agreement data/annotation/real_news_double.jsonl
    .venv/bin/python scripts/real_corpus.py build RAW.jsonl LABELS.jsonl [LABELS.jsonl ...] \\
        --settled data/annotation/real_news_double.jsonl [--round data/annotation/real_news_round_1.jsonl ...] \\
        --out data/train/real_news.jsonl

``RAW.jsonl`` has one row per sentence (id, doc_id, text, source, licence, date, pairs, title); a labels
file has ``{"id", "topics", "stance": {target: label}}`` per sentence. ``build`` writes one row per
sentence and target (an article about several pairs gives one row per pair; an off-topic article, which
names no pair, gets one of the corpus's pairs, fixed per article), taking the settled labels of the
double-labelled sentences where they exist (round 0). Each ``--round`` file holds a later labelling round:
one row per sentence and target chosen by ``tagger select`` from the pool, labelled twice (``a``, ``b``) and
settled (``settled``), appended as round 1, 2, ... ``agreement`` prints Cohen's kappa per topic and
for stance (per sentence and target) between annotators ``a`` and ``b`` of the double-labelled file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from sklearn.metrics import cohen_kappa_score, f1_score

TOPICS = ("security", "energy", "trade", "diplomacy")
STANCES = ("favor", "against", "neutral")
DEFAULT_TARGET = "closer Iran–Iraq ties"  # off-topic articles name no pair


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def targets(row: dict) -> list[str]:
    return [f"closer {a}–{b} ties" for a, b in row["pairs"]] or [DEFAULT_TARGET]


def agreement(rows: list[dict]) -> dict:
    """Cohen's kappa per topic (present or not) and for stance, between annotators ``a`` and ``b``."""
    report: dict = {"sentences": len(rows)}
    for topic in TOPICS:
        a = [topic in r["a"]["topics"] for r in rows]
        b = [topic in r["b"]["topics"] for r in rows]
        report[f"kappa_{topic}"] = round(float(cohen_kappa_score(a, b)), 3)
    pairs = [(r["a"]["stance"][t], r["b"]["stance"][t]) for r in rows for t in r["a"]["stance"]]
    report["stance_judgements"] = len(pairs)
    report["kappa_stance"] = round(float(cohen_kappa_score(*zip(*pairs, strict=True))), 3)
    a_sets = [[t in r["a"]["topics"] for t in TOPICS] for r in rows]
    b_sets = [[t in r["b"]["topics"] for t in TOPICS] for r in rows]
    report["topic_macro_f1_b_vs_a"] = round(float(f1_score(a_sets, b_sets, average="macro", zero_division=0)), 3)
    report["topic_sets_equal"] = round(sum(x == y for x, y in zip(a_sets, b_sets, strict=True)) / len(rows), 3)
    report["stance_equal"] = round(sum(x == y for x, y in pairs) / len(pairs), 3)
    return report


def check_labels(label: dict, row: dict, where: str) -> None:
    expected = row["targets"] if "targets" in row else targets(row)
    if set(label["topics"]) - set(TOPICS) or set(label["stance"]) != set(expected):
        raise SystemExit(f"error: {where}: topics outside the schema or targets that do not match the sentence")
    if set(label["stance"].values()) - set(STANCES):
        raise SystemExit(f"error: {where}: stance outside the schema")


def build(raw: list[dict], labels: list[dict], settled: list[dict]) -> list[dict]:
    """One row per sentence and target, in the project's schema plus provenance columns."""
    chosen = {label["id"]: label for label in labels}
    chosen.update({row["id"]: row["settled"] for row in settled})
    double = {row["id"] for row in settled}
    pairs = sorted({target for row in raw for target in targets(row) if row["pairs"]})
    out = []
    for row in raw:
        if row["id"] not in chosen:
            raise SystemExit(f"error: sentence {row['id']} has no labels")
        label = chosen[row["id"]]
        check_labels(label, row, row["id"])
        stance = dict(label["stance"])
        if not row["pairs"]:
            # an off-topic article names no pair: it was labelled toward the default target, and the schema
            # makes an unrelated sentence neutral toward any pair. It gets one corpus pair (fixed per
            # article), so that the default pair is not learnt as "always neutral".
            digest = int(hashlib.sha256(row["doc_id"].encode()).hexdigest(), 16)
            stance = {pairs[digest % len(pairs)]: stance[DEFAULT_TARGET]}
        for index, (target, value) in enumerate(stance.items()):
            out.append(
                {
                    "id": row["id"] if index == 0 else f"{row['id']}~{index}",
                    "doc_id": row["doc_id"],
                    "text": row["text"],
                    "topics": [t for t in TOPICS if t in label["topics"]],
                    "stance": value,
                    "target": target,
                    "title": row["title"],
                    "date": row["date"],
                    "source": row["source"],
                    "licence": row["licence"],
                    "double_labelled": row["id"] in double,
                    "round": 0,
                }
            )
    return out


def build_round(rows: list[dict], number: int) -> list[dict]:
    """Rows of labelling round ``number`` (sentence-and-target rows chosen by ``tagger select``), settled labels."""
    out = []
    for row in rows:
        label = row["settled"]
        check_labels(label, {"targets": [row["target"]]}, row["id"])
        out.append(
            {
                "id": row["id"],
                "doc_id": row["doc_id"],
                "text": row["text"],
                "topics": [t for t in TOPICS if t in label["topics"]],
                "stance": label["stance"][row["target"]],
                "target": row["target"],
                "title": row["title"],
                "date": row["date"],
                "source": row["source"],
                "licence": row["licence"],
                "double_labelled": True,
                "round": number,
            }
        )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    agree = sub.add_parser("agreement")
    agree.add_argument("double", type=Path)
    make = sub.add_parser("build")
    make.add_argument("raw", type=Path)
    make.add_argument("labels", type=Path, nargs="+")
    make.add_argument("--settled", type=Path, required=True)
    make.add_argument("--round", type=Path, action="append", default=[], dest="rounds")
    make.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "agreement":
        print(json.dumps(agreement(read_jsonl(args.double)), indent=2))
        return
    labels = [label for path in args.labels for label in read_jsonl(path)]
    rows = build(read_jsonl(args.raw), labels, read_jsonl(args.settled))
    for number, path in enumerate(args.rounds, start=1):
        rows += build_round(read_jsonl(path), number)
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise SystemExit("error: a row id appears twice across the rounds")
    args.out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"{len(rows)} rows from {len({r['doc_id'] for r in rows})} documents to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
