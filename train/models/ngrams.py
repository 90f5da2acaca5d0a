"""scikit-learn's ``word`` and ``char_wb`` n-gram analyzers, compiled, over a whole batch at once.

``TfidfVectorizer`` cuts each text into Python strings and looks each up in a dict: about 80% of
scoring time for the TF-IDF families. Here a batch is one array of code points; numba-compiled loops
find the tokens (maximal runs of ``\\w`` of two or more characters, as the default ``token_pattern``
``(?u)\\b\\w\\w+\\b``) or the whitespace-separated words (``char_wb``), hash each n-gram, and look the
hash up in an open-addressing table built from the fitted vocabulary. A hit is confirmed by comparing
code points with the vocabulary's term, so the features are the vectorizer's exactly; tests check
this on the corpus, the seeds and adversarial Unicode.

Which characters are ``\\w`` and which are whitespace is asked of Python's own ``re`` (the engine the
vectorizer uses), once per code point a process meets. Lower-casing is Python's ``str.lower`` per
text, as the vectorizer's preprocessor does. Vectorizers with other settings (a custom
``token_pattern``, ``strip_accents``, stop words, a callable analyzer) are not compiled:
:func:`compilable` says which are.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping, Sequence

import numpy as np
from numba import njit
from sklearn.feature_extraction.text import TfidfVectorizer

__all__ = ["NgramAnalyzer", "add_tfidf_products", "compilable", "pack_weights", "tfidf_rows", "warm_up"]

DEFAULT_TOKEN_PATTERN = r"(?u)\b\w\w+\b"
SPACE = np.uint32(32)
FNV_OFFSET = np.uint64(0xCBF29CE484222325)
FNV_PRIME = np.uint64(0x100000001B3)
MIX_1 = np.uint64(0xFF51AFD7ED558CCD)
MIX_2 = np.uint64(0xC4CEB9FE1A85EC53)
EMPTY = -1
FREE = np.uint64(0xFFFFFFFFFFFFFFFF)  # a free slot of a vocabulary table
HIGH = np.uint64(0xFFFFFFFF00000000)
LOW32 = np.uint64(0xFFFFFFFF)
LENGTH_BITS = np.uint64(24)
LOW24 = np.uint64(0xFFFFFF)  # a term's length in its slot: longer terms are left to sklearn

# per code point: 1 = classified, 2 = \w (re), 4 = whitespace (re \s, str.split)
KNOWN, WORD, SPACE_BIT = 1, 2, 4
_classes = np.zeros(0x110000, dtype=np.uint8)
_classes_lock = threading.Lock()


def _classify(codepoints: np.ndarray) -> None:
    """Record what ``re`` says of each code point (``\\w``? whitespace?)."""
    text = "".join(map(chr, codepoints.tolist()))
    word = np.frombuffer(re.sub(r"\W", "\0", text).encode("utf-32-le", "surrogatepass"), dtype=np.uint32) != 0
    space = np.frombuffer(re.sub(r"\S", "\0", text).encode("utf-32-le", "surrogatepass"), dtype=np.uint32) != 0
    if len(codepoints) and codepoints[0] == 0:  # NUL is neither; \0 marks "not" above
        word[0] = space[0] = False
    _classes[codepoints] = KNOWN | (WORD * word) | (SPACE_BIT * space)


_classify(np.arange(128, dtype=np.uint32))


@njit(cache=True, nogil=True)
def _all_known(codepoints, classes):
    for point in codepoints:
        if not classes[point] & KNOWN:
            return False
    return True


def char_classes(codepoints: np.ndarray) -> np.ndarray:
    """The class table, with every code point of ``codepoints`` classified."""
    if not _all_known(codepoints, _classes):
        with _classes_lock:
            unknown = np.unique(codepoints[(_classes[codepoints] & KNOWN) == 0])
            if unknown.size:
                _classify(unknown)
    return _classes


def compilable(vectorizer: TfidfVectorizer) -> bool:
    """Whether the vectorizer's analyzer is one this module reproduces exactly."""
    return (
        vectorizer.analyzer in ("word", "char_wb")
        and vectorizer.input == "content"
        and vectorizer.preprocessor is None
        and vectorizer.tokenizer is None
        and vectorizer.strip_accents is None
        and (
            vectorizer.analyzer != "word"
            or (vectorizer.stop_words is None and vectorizer.token_pattern == DEFAULT_TOKEN_PATTERN)
        )
    )


def code_points(texts: Sequence[str], lowercase: bool) -> tuple[np.ndarray, np.ndarray]:
    """The batch as one array of code points and each text's start (``starts[-1]`` is the end)."""
    if lowercase:
        texts = [text.lower() for text in texts]
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    starts = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    joined = "".join(texts).encode("utf-32-le", "surrogatepass")
    return np.frombuffer(joined, dtype=np.uint32), starts


@njit(cache=True, nogil=True)
def _hash(buffer, start, length):
    """FNV-1a over code points: a running state, which a word bigram continues with " " and the next word."""
    h = FNV_OFFSET
    for i in range(start, start + length):
        h = (h ^ np.uint64(buffer[i])) * FNV_PRIME
    return h


@njit(cache=True, nogil=True)
def _mix(h):
    """MurmurHash3's finaliser: FNV's low bits depend on the low bits alone, and slots are taken from them."""
    h ^= h >> np.uint64(33)
    h *= MIX_1
    h ^= h >> np.uint64(33)
    h *= MIX_2
    h ^= h >> np.uint64(33)
    return h


@njit(cache=True, nogil=True)
def _build_table(term_cps, term_starts):
    """Open addressing over the vocabulary, a power of two at least twice its size. A slot holds the
    hash's high half and the term id (``FREE`` where free), then where the term's code points start and
    how many there are, so a hit is confirmed reading the code points alone. A term's id is its feature
    id (terms are stored in feature order)."""
    n = len(term_starts) - 1
    capacity = 16
    while capacity < 2 * n:
        capacity *= 2
    table = np.full((capacity, 2), FREE, dtype=np.uint64)
    mask = np.uint64(capacity - 1)
    for term in range(n):
        length = term_starts[term + 1] - term_starts[term]
        h = _mix(_hash(term_cps, term_starts[term], length))
        slot = h & mask
        while table[slot, 0] != FREE:
            slot = (slot + np.uint64(1)) & mask
        table[slot, 0] = (h & HIGH) | np.uint64(term)
        table[slot, 1] = (np.uint64(term_starts[term]) << LENGTH_BITS) | np.uint64(length)
    return table


@njit(cache=True, nogil=True)
def _find(table, term_cps, h, buffer, start, length):
    """The id of the term spelled ``buffer[start:start + length]`` (``h``: its ``_mix(_hash(...))``), or ``EMPTY``."""
    mask = np.uint64(len(table) - 1)
    slot = h & mask
    high = h & HIGH
    while True:
        entry = table[slot, 0]
        if entry == FREE:
            return EMPTY
        if entry & HIGH == high:
            where = table[slot, 1]
            if np.int64(where & LOW24) == length:
                offset = np.int64(where >> LENGTH_BITS)
                same = True
                for i in range(length):
                    if term_cps[offset + i] != buffer[start + i]:
                        same = False
                        break
                if same:
                    return np.int64(entry & LOW32)
        slot = (slot + np.uint64(1)) & mask


@njit(cache=True, nogil=True)
def _touch(table, term_cps, hashes, n, sink):
    """Read the first slot of each of ``hashes[:n]`` before any is needed: the loads are independent, so
    the processor overlaps their cache misses, which one lookup after another would wait out in turn."""
    mask = np.uint64(len(table) - 1)
    seen = np.uint64(0)
    for k in range(n):
        seen ^= table[hashes[k] & mask, 0]
    for k in range(n):  # then the code points a hit is confirmed against
        slot = hashes[k] & mask
        if table[slot, 0] & HIGH == hashes[k] & HIGH:
            seen ^= np.uint64(term_cps[np.int64(table[slot, 1] >> LENGTH_BITS)])
    sink[0] ^= seen  # kept, so the compiler keeps the loads


@njit(cache=True, nogil=True)
def _count(feature, counts, out_indices, count):
    """One occurrence of ``feature`` in the current row; a first sighting lists it at ``count``. The new ``count``."""
    if counts[feature] == 0:
        out_indices[count] = feature
        count += 1
    counts[feature] += 1
    return count


@njit(cache=True, nogil=True)
def _close_row(first, count, counts, out_indices, out_counts):
    """The row listed at ``first:count`` takes its counts; the counters go back to zero for the next row."""
    for k in range(first, count):
        out_counts[k] = counts[out_indices[k]]
        counts[out_indices[k]] = 0


@njit(cache=True, nogil=True)
def _word_counts(cps, starts, classes, min_n, max_n, table, term_cps, n_features):
    """CSR of each text's word n-gram counts (the default ``token_pattern``)."""
    n_docs = len(starts) - 1
    span = max_n - min_n + 1
    capacity = len(cps) * span // 2 + n_docs * span + 1
    out_indices = np.empty(capacity, dtype=np.int32)
    out_counts = np.empty(capacity, dtype=np.float64)
    indptr = np.zeros(n_docs + 1, dtype=np.int64)
    counts = np.zeros(n_features, dtype=np.int32)
    token_starts = np.empty(len(cps) // 2 + 2, dtype=np.int64)
    token_ends = np.empty(len(cps) // 2 + 2, dtype=np.int64)
    token_hashes = np.empty(len(cps) // 2 + 2, dtype=np.uint64)
    grams = np.empty(64, dtype=np.uint64)
    sink = np.zeros(1, dtype=np.uint64)
    scratch = np.empty(64, dtype=np.uint32)
    count = 0
    for doc in range(n_docs):
        # tokens: maximal runs of \w, two characters or more (the default token_pattern)
        n_tokens = 0
        i, end = starts[doc], starts[doc + 1]
        while i < end:
            if classes[cps[i]] & WORD:
                j = i + 1
                while j < end and classes[cps[j]] & WORD:
                    j += 1
                if j - i >= 2:
                    token_starts[n_tokens] = i
                    token_ends[n_tokens] = j
                    token_hashes[n_tokens] = _hash(cps, i, j - i)
                    n_tokens += 1
                i = j
            else:
                i += 1
        if n_tokens * span > len(grams):
            grams = np.empty(2 * n_tokens * span, dtype=np.uint64)
        # every n-gram's hash first, then one pass over their slots, then the lookups
        n_grams = 0
        for n in range(min_n, max_n + 1):
            for first in range(n_tokens - n + 1):
                h = token_hashes[first]
                for t in range(first + 1, first + n):
                    h = (h ^ np.uint64(SPACE)) * FNV_PRIME
                    for c in range(token_starts[t], token_ends[t]):
                        h = (h ^ np.uint64(cps[c])) * FNV_PRIME
                grams[n_grams] = _mix(h)
                n_grams += 1
        _touch(table, term_cps, grams, n_grams, sink)
        first_in_row = count
        g = 0
        for n in range(min_n, max_n + 1):
            for first in range(n_tokens - n + 1):
                h = grams[g]
                g += 1
                if n == 1:
                    start, length = token_starts[first], token_ends[first] - token_starts[first]
                    term = _find(table, term_cps, h, cps, start, length)
                else:
                    length = n - 1
                    for t in range(first, first + n):
                        length += token_ends[t] - token_starts[t]
                    if length > len(scratch):
                        scratch = np.empty(2 * length, dtype=np.uint32)
                    position = 0
                    for t in range(first, first + n):
                        if t > first:
                            scratch[position] = SPACE
                            position += 1
                        for c in range(token_starts[t], token_ends[t]):
                            scratch[position] = cps[c]
                            position += 1
                    term = _find(table, term_cps, h, scratch, 0, length)
                if term != EMPTY:
                    count = _count(term, counts, out_indices, count)
        _close_row(first_in_row, count, counts, out_indices, out_counts)
        indptr[doc + 1] = count
    return indptr, out_indices[:count], out_counts[:count]


@njit(cache=True, nogil=True)
def _char_wb_counts(cps, starts, classes, min_n, max_n, table, term_cps, n_features):
    """CSR of each text's ``char_wb`` n-gram counts; each distinct word is looked up once per batch."""
    n_docs = len(starts) - 1
    n_cps = len(cps)
    # words: maximal runs of non-whitespace (str.split)
    word_starts = np.empty(n_cps // 2 + 2, dtype=np.int64)
    word_ends = np.empty(n_cps // 2 + 2, dtype=np.int64)
    doc_words = np.zeros(n_docs + 1, dtype=np.int64)
    n_words = 0
    for doc in range(n_docs):
        i, end = starts[doc], starts[doc + 1]
        while i < end:
            if classes[cps[i]] & SPACE_BIT:
                i += 1
                continue
            j = i + 1
            while j < end and not classes[cps[j]] & SPACE_BIT:
                j += 1
            word_starts[n_words] = i
            word_ends[n_words] = j
            n_words += 1
            i = j
        doc_words[doc + 1] = n_words
    # distinct words: a table keyed by the word's hash, confirmed by its code points; sized for the
    # distinct words (grown as they come), so it stays in cache where one slot per word would not
    capacity = 1024
    mask = np.uint64(capacity - 1)
    word_slots = np.full(capacity, EMPTY, dtype=np.int64)  # slot → first occurrence (a word index)
    word_hashes = np.zeros(capacity, dtype=np.uint64)
    first_of = np.empty(n_words, dtype=np.int64)  # word → its first occurrence
    distinct = 0
    for w in range(n_words):
        length = word_ends[w] - word_starts[w]
        h = _mix(_hash(cps, word_starts[w], length))
        slot = h & mask
        while True:
            seen = word_slots[slot]
            if seen == EMPTY:
                word_slots[slot] = w
                word_hashes[slot] = h
                first_of[w] = w
                distinct += 1
                break
            if word_hashes[slot] == h and word_ends[seen] - word_starts[seen] == length:
                same = True
                for k in range(length):
                    if cps[word_starts[seen] + k] != cps[word_starts[w] + k]:
                        same = False
                        break
                if same:
                    first_of[w] = seen
                    break
            slot = (slot + np.uint64(1)) & mask
        if 2 * distinct > capacity:  # at half full: twice the slots, the words rehashed
            old_slots, old_hashes = word_slots, word_hashes
            capacity *= 2
            mask = np.uint64(capacity - 1)
            word_slots = np.full(capacity, EMPTY, dtype=np.int64)
            word_hashes = np.zeros(capacity, dtype=np.uint64)
            for old in range(len(old_slots)):
                if old_slots[old] != EMPTY:
                    slot = old_hashes[old] & mask
                    while word_slots[slot] != EMPTY:
                        slot = (slot + np.uint64(1)) & mask
                    word_slots[slot] = old_slots[old]
                    word_hashes[slot] = old_hashes[old]
    # each distinct word's feature ids, from its padded form " word "
    ids_start = np.zeros(n_words, dtype=np.int64)
    ids_end = np.zeros(n_words, dtype=np.int64)
    span = max_n - min_n + 1
    word_ids = np.empty(16, dtype=np.int32)
    used = 0
    padded = np.empty(64, dtype=np.uint32)
    windows = np.empty(64, dtype=np.uint64)
    sink = np.zeros(1, dtype=np.uint64)
    window_starts = np.empty(64, dtype=np.int64)
    window_lengths = np.empty(64, dtype=np.int64)
    for w in range(n_words):
        if first_of[w] != w:
            continue
        length = word_ends[w] - word_starts[w] + 2
        if length > len(padded):
            padded = np.empty(2 * length, dtype=np.uint32)
        padded[0] = SPACE
        for k in range(length - 2):
            padded[k + 1] = cps[word_starts[w] + k]
        padded[length - 1] = SPACE
        if used + span * length > len(word_ids):
            grown = np.empty(2 * (used + span * length), dtype=np.int32)
            grown[:used] = word_ids[:used]
            word_ids = grown
        ids_start[w] = used
        if span * length > len(windows):
            windows = np.empty(2 * span * length, dtype=np.uint64)
            window_starts = np.empty(2 * span * length, dtype=np.int64)
            window_lengths = np.empty(2 * span * length, dtype=np.int64)
        # the word's n-grams, hashed first; then one pass over their slots; then the lookups
        n_windows = 0
        for n in range(min_n, max_n + 1):
            if length <= n:  # a word shorter than n counts once, whole
                windows[n_windows] = _mix(_hash(padded, 0, length))
                window_starts[n_windows] = 0
                window_lengths[n_windows] = length
                n_windows += 1
                break
            for s in range(length - n + 1):
                windows[n_windows] = _mix(_hash(padded, s, n))
                window_starts[n_windows] = s
                window_lengths[n_windows] = n
                n_windows += 1
        _touch(table, term_cps, windows, n_windows, sink)
        for k in range(n_windows):
            term = _find(table, term_cps, windows[k], padded, window_starts[k], window_lengths[k])
            if term != EMPTY:
                word_ids[used] = term
                used += 1
        ids_end[w] = used
    # each text: its words' ids, counted (a row's first sighting of an id lists it)
    size = 16
    for w in range(n_words):
        size += ids_end[first_of[w]] - ids_start[first_of[w]]
    out_indices = np.empty(size, dtype=np.int32)
    out_counts = np.empty(size, dtype=np.float64)
    indptr = np.zeros(n_docs + 1, dtype=np.int64)
    counts = np.zeros(n_features, dtype=np.int32)
    count = 0
    for doc in range(n_docs):
        first_in_row = count
        for w in range(doc_words[doc], doc_words[doc + 1]):
            first = first_of[w]
            for k in range(ids_start[first], ids_end[first]):
                count = _count(word_ids[k], counts, out_indices, count)
        _close_row(first_in_row, count, counts, out_indices, out_counts)
        indptr[doc + 1] = count
    return indptr, out_indices[:count], out_counts[:count]


# 1 + log(tf) of the small counts almost every n-gram has, computed by numpy as scikit-learn does
SUBLINEAR = np.log(np.arange(1, 1025, dtype=np.float64)) + 1.0


@njit(cache=True, nogil=True)
def _tfidf_rows(indptr, indices, data, idf, sublinear, l2, table):
    for row in range(len(indptr) - 1):
        total = 0.0
        for k in range(indptr[row], indptr[row + 1]):
            value = data[k]
            if sublinear:
                count = np.int64(value)
                value = table[count - 1] if count == value and 1 <= count <= len(table) else np.log(value) + 1.0
            if len(idf):
                value *= idf[indices[k]]
            data[k] = value
            total += value * value
        if l2 and total > 0.0:
            norm = np.sqrt(total)
            for k in range(indptr[row], indptr[row + 1]):
                data[k] /= norm


def tfidf_rows(X, idf: np.ndarray | None, sublinear: bool, l2: bool) -> None:
    """Counts → TF-IDF values in place, as ``TfidfTransformer.transform`` computes them: ``1 + log(tf)``
    if sublinear, times idf, each row scaled to unit length."""
    empty = np.empty(0, dtype=np.float64)
    _tfidf_rows(X.indptr, X.indices, X.data, empty if idf is None else idf, sublinear, l2, SUBLINEAR)


@njit(cache=True, nogil=True)
def _add_tfidf_products(indptr, indices, data, sublinear, l2, table, packed, row_offsets, decision):
    values = np.empty(64, dtype=np.float64)
    outputs = packed.shape[1] - 1
    for row in range(len(indptr) - 1):
        offset = row_offsets[row] if len(row_offsets) else 0
        if offset < 0:
            continue
        first, last = indptr[row], indptr[row + 1]
        if last - first > len(values):
            values = np.empty(2 * (last - first), dtype=np.float64)
        total = 0.0
        for k in range(first, last):
            value = data[k]
            if sublinear:
                count = np.int64(value)
                value = table[count - 1] if count == value and 1 <= count <= len(table) else np.log(value) + 1.0
            value *= packed[offset + indices[k], 0]  # idf: the weights follow it in the same row
            values[k - first] = value
            total += value * value
        scale = 1.0 / np.sqrt(total) if l2 and total > 0.0 else 1.0
        for k in range(first, last):
            value = values[k - first] * scale
            feature = offset + indices[k]
            for j in range(outputs):
                decision[row, j] += value * packed[feature, j + 1]


def pack_weights(idf: np.ndarray | None, weights: np.ndarray, width: int) -> np.ndarray:
    """One row per feature: its idf (1 without idf), then its weights; ``weights`` may hold several
    copies of the features one after another (a crossed block: one per target)."""
    copies = weights.shape[0] // width if width else 0
    column = np.ones(weights.shape[0]) if idf is None else np.tile(np.asarray(idf, dtype=np.float64), copies)
    return np.ascontiguousarray(np.column_stack([column, weights]), dtype=np.float64)


def add_tfidf_products(
    counts: tuple[np.ndarray, np.ndarray, np.ndarray],
    sublinear: bool,
    l2: bool,
    packed: np.ndarray,
    decision: np.ndarray,
    row_offsets: np.ndarray | None = None,
) -> None:
    """``decision += tfidf(counts) @ weights`` without building the TF-IDF matrix (``packed``:
    :func:`pack_weights`); each row's features start at ``row_offsets[row]`` (a negative offset: the row
    adds nothing)."""
    indptr, indices, data = counts
    offsets = np.empty(0, dtype=np.int64) if row_offsets is None else row_offsets
    _add_tfidf_products(indptr, indices, data, sublinear, l2, SUBLINEAR, packed, offsets, decision)


class NgramAnalyzer:
    """A fitted vectorizer's analyzer and vocabulary, compiled: texts → each text's n-gram counts."""

    def __init__(self, analyzer: str, ngram_range: tuple[int, int], lowercase: bool, vocabulary: Mapping[str, int]):
        if analyzer not in ("word", "char_wb"):
            raise ValueError(f"analyzer {analyzer!r} is not compiled; use the vectorizer's own")
        self.analyzer = analyzer
        self.min_n, self.max_n = (int(n) for n in ngram_range)
        self.lowercase = lowercase
        self.n_features = len(vocabulary)
        terms = [""] * self.n_features
        for term, feature in vocabulary.items():
            terms[feature] = term
        self.term_cps, self.term_starts = code_points(terms, lowercase=False)
        self.table = _build_table(self.term_cps, self.term_starts)
        self._counts = _word_counts if analyzer == "word" else _char_wb_counts

    @classmethod
    def from_vectorizer(cls, vectorizer: TfidfVectorizer) -> NgramAnalyzer | None:
        """None if the vectorizer's analyzer is not one compiled here."""
        if not compilable(vectorizer) or max(map(len, vectorizer.vocabulary_), default=0) >= int(LOW24):
            return None
        return cls(vectorizer.analyzer, vectorizer.ngram_range, vectorizer.lowercase, vectorizer.vocabulary_)

    def counts(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """CSR ``indptr``, ``indices`` and ``data`` of each text's term counts (a row's ids distinct, unsorted)."""
        cps, starts = code_points(texts, self.lowercase)
        classes = char_classes(cps)
        return self._counts(
            cps, starts, classes, self.min_n, self.max_n, self.table, self.term_cps, self.n_features
        )


def warm_up() -> None:
    """Compile every function here into numba's on-disk cache (``make install`` runs this once, so the
    first tagging does not wait seconds for the compiler)."""
    import scipy.sparse as sp

    vocabulary = {"ab": 0, "ab cd": 1, " a": 2}
    for analyzer in ("word", "char_wb"):
        indptr, indices, data = NgramAnalyzer(analyzer, (1, 2), True, vocabulary).counts(["ab cd", "x"])
        packed = pack_weights(np.ones(3), np.ones((3, 1)), 3)
        add_tfidf_products((indptr, indices, data.copy()), True, True, packed, np.zeros((2, 1)))
        tfidf_rows(sp.csr_matrix((data, indices, indptr), shape=(2, 3)), np.ones(3), True, True)
