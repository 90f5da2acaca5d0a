"""Label statistics of a labelled sentence file, as reported in dataset cards.

Run ``.venv/bin/python scripts/corpus_stats.py data/train/news_sentences.jsonl`` to print them as JSON.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from train.domain import STANCE_LABELS, TOPIC_LABELS


def corpus_stats(path: Path) -> dict:
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    n = len(rows)
    topics = Counter(t for r in rows for t in r["topics"])
    stance = Counter(r["stance"] for r in rows)
    pairs = Counter(r["target"] for r in rows)
    words = sorted(len(r["text"].split()) for r in rows)
    return {
        "sentences": n,
        "documents": len({r["doc_id"] for r in rows}),
        "topics": {t: topics[t] for t in TOPIC_LABELS},
        "multi_topic": sum(len(r["topics"]) >= 2 for r in rows),
        "no_topic": sum(not r["topics"] for r in rows),
        "stance": {s: stance[s] for s in STANCE_LABELS},
        "targets": dict(pairs.most_common()),
        "words_min_median_max": [words[0], words[n // 2], words[-1]] if n else [],
    }


if __name__ == "__main__":
    print(json.dumps(corpus_stats(Path(sys.argv[1])), indent=2, ensure_ascii=False))
