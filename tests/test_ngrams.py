"""The compiled n-gram analyzer counts exactly what scikit-learn's ``word`` and ``char_wb`` analyzers do."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

from tests.conftest import ROOT, SEEDS_FILE, TRAIN_FILE, read_jsonl
from train.models.ngrams import NgramAnalyzer, char_classes, code_points, compilable

# the written corpus, then the real news sentences
CORPUS = [r["text"] for r in read_jsonl(TRAIN_FILE) + read_jsonl(ROOT / "data" / "train" / "real_news.jsonl")]
SEEDS = [r["text"] for r in read_jsonl(SEEDS_FILE)]
# casing that changes length or depends on context, whitespace beyond ASCII, word characters that are
# digits or marks, lone surrogates, astral characters, control separators, empty and blank texts
UNICODE = [
    "İstanbul İİ ΣΟΦΟΣ ΟΔΟΣ. σοφος Σ",
    "a\u00a0b\u2003cc\u200bdd\u3000ee\u2028ff\u0085gg",
    "x\ud800yy zz\udfff \ud83d\ude42",
    "ǅungla ﬁne ŉ ß ẞ ﬀ",
    "٣٤٥ ١٢ abc_def __ _ x_",
    "\x1c\x1dab cd\x1e\x1fef\x0bgh\x0cij",
    "",
    "   \t\n ",
    "e\u0301te\u0301 café cafe\u0301",
    "🙂🙂 ab🙂cd 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟙𝟚 ",
    "A" * 300,
    "日本語のテキスト 中文 한국어 ไทย",
    "\x00\x00ab\x00cd",
]


def random_texts(count: int, seed: int) -> list[str]:
    """Texts of code points drawn from every plane, with spaces and word characters mixed in."""
    rng = random.Random(seed)
    pools = [(0x20, 0x7F), (0xA0, 0x3000), (0xD800, 0xE000), (0x10000, 0x30000), (0xE0000, 0x110000)]
    texts = []
    for _ in range(count):
        chars = []
        for _ in range(rng.randint(0, 40)):
            low, high = rng.choice(pools)
            chars.append(rng.choice([chr(rng.randrange(low, high)), " ", "ab", "Σ"]))
        texts.append("".join(chars))
    return texts


def counted(analyzer: NgramAnalyzer, texts: list[str]) -> sp.csr_matrix:
    indptr, indices, counts = analyzer.counts(texts)
    X = sp.csr_matrix((counts, indices, indptr), shape=(len(texts), analyzer.n_features))
    X.sort_indices()
    return X


@pytest.mark.parametrize(
    "analyzer,ngram_range",
    [("word", (1, 2)), ("word", (1, 1)), ("word", (2, 3))]
    + [("char_wb", (2, 5)), ("char_wb", (1, 1)), ("char_wb", (3, 6))],
)
@pytest.mark.parametrize("lowercase", [True, False])
def test_counts_equal_sklearns(analyzer, ngram_range, lowercase):
    adversarial = UNICODE + random_texts(300, seed=7)
    reference = CountVectorizer(analyzer=analyzer, ngram_range=ngram_range, lowercase=lowercase)
    # fitted on part of the corpus and the adversarial texts: the rest of the corpus and the seeds
    # meet n-grams the vocabulary lacks
    reference.fit(CORPUS[:1500] + adversarial)
    compiled = NgramAnalyzer.from_vectorizer(reference)
    # every corpus sentence for the families' own settings; every seventh for the others (time)
    default = (analyzer, ngram_range, lowercase) in (("word", (1, 2), True), ("char_wb", (2, 5), True))
    corpus = CORPUS if default else CORPUS[::7]
    for texts in (corpus, SEEDS, adversarial):
        expected = reference.transform(texts)
        assert (counted(compiled, texts) != expected).nnz == 0
    assert compiled.counts([])[0].tolist() == [0]


def test_each_row_lists_a_feature_once_with_its_count():
    compiled = NgramAnalyzer("word", (1, 1), True, {"war": 0, "and": 1, "peace": 2})
    indptr, indices, counts = compiled.counts(["War and war and WAR, peace!", "nothing known", "peace"])
    bounds = zip(indptr[:-1], indptr[1:], strict=True)
    rows = [dict(zip(indices[a:b].tolist(), counts[a:b].tolist(), strict=True)) for a, b in bounds]
    assert rows == [{0: 3.0, 1: 2.0, 2: 1.0}, {}, {2: 1.0}]


def test_character_classes_are_the_re_modules():
    everything = np.arange(0x110000, dtype=np.uint32)
    classes = char_classes(everything)
    sample = random.Random(3).sample(range(0x110000), 20_000) + list(range(0x3000))
    for point in sample:
        char = chr(point)
        assert bool(classes[point] & 2) == bool(re.match(r"\w", char)), hex(point)
        assert bool(classes[point] & 4) == char.isspace() == bool(re.match(r"\s", char)), hex(point)


def test_code_points_keep_lone_surrogates_and_lowercase_per_text():
    cps, starts = code_points(["AΣ", "\ud800İ", ""], lowercase=True)
    assert starts.tolist() == [0, 2, 5, 5]  # "İ".lower() is two code points
    assert "".join(map(chr, cps.tolist())) == "aς" + "\ud800i\u0307"


@pytest.mark.parametrize(
    "options",
    [
        {"analyzer": "char"},
        {"strip_accents": "unicode"},
        {"token_pattern": r"\b\w+\b"},
        {"stop_words": ["the"]},
        {"analyzer": lambda text: text.split()},
        {"preprocessor": str.upper},
    ],
)
def test_settings_it_cannot_reproduce_are_left_to_sklearn(options):
    vectorizer = TfidfVectorizer(**options).fit(CORPUS[:50])
    assert not compilable(vectorizer)
    assert NgramAnalyzer.from_vectorizer(vectorizer) is None


def test_threads_scoring_at_once_count_as_one_does():
    """The analyzer is shared by a service's threads: new code points are classified under a lock, while
    other threads read the table; each batch's counts stay sklearn's."""
    from concurrent.futures import ThreadPoolExecutor

    batches = [random_texts(200, seed=100 + i) + CORPUS[i * 50 : i * 50 + 50] for i in range(8)]
    reference = CountVectorizer(analyzer="char_wb", ngram_range=(2, 4)).fit(sum(batches, []))
    compiled = NgramAnalyzer.from_vectorizer(reference)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda texts: counted(compiled, texts), batches))
    for texts, X in zip(batches, results, strict=True):
        assert (X != reference.transform(texts)).nnz == 0
