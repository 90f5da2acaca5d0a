"""The static-embedding family's encoder: the same vectors as model2vec's own ``encode``, at bulk speed."""

import numpy as np
import pytest

from train.models.static import StaticEncoder, distilled_model

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def static_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("static-cache")


@pytest.fixture(scope="module")
def static(tiny_encoder, static_cache):
    """Distilled once into an empty cache (a distillation takes seconds: the tests share it)."""
    return distilled_model(tiny_encoder, 16, static_cache)


def test_distilled_model_is_cached_once(static, tiny_encoder, static_cache):
    made = sorted(p.name for p in static_cache.iterdir())
    assert len(made) == 1 and not made[0].startswith(".")  # the model's folder, no staging folder left
    changed = static_cache.stat().st_mtime_ns
    again = distilled_model(tiny_encoder, 16, static_cache)
    assert static_cache.stat().st_mtime_ns == changed  # read, not distilled again (no staging folder came and went)
    assert sorted(p.name for p in static_cache.iterdir()) == made
    assert np.array_equal(np.asarray(static.embedding), np.asarray(again.embedding))


@pytest.mark.parametrize("threads", [1, 2])
def test_encoder_matches_model2vec(static, threads):
    texts = [
        "Ministers welcomed the pipeline deal in Ankara on Tuesday.",
        "",  # no tokens: a zero vector, as model2vec gives
        "Tariffs on steel rose again. " * 80,  # longer than max_length: truncated the same way
        "ẞtrange ☃ tokens ⟨here⟩",
    ] * 100  # enough sentences to take the threaded path
    encoder = StaticEncoder(static, max_length=64)
    encoder.threads = threads
    ours = encoder.encode(texts)
    theirs = static.encode(texts, max_length=64, use_multiprocessing=False)
    assert ours.shape == theirs.shape
    assert np.allclose(ours, theirs, atol=1e-3)  # model2vec pools in float16, we in float32
    assert not ours[1].any()


def test_encoder_shared_by_threads_gives_each_its_own_answer(static):
    """Serving threads share one encoder (and its tokenizer pool): every call gets its own sentences' vectors."""
    from concurrent.futures import ThreadPoolExecutor

    encoder = StaticEncoder(static, max_length=64)
    encoder.threads = 2
    batches = [[f"Talks on gas exports resumed, round {i}, sentence {j}." for j in range(300)] for i in range(8)]
    alone = [encoder.encode(batch) for batch in batches]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(encoder.encode, batches))
    for one, other in zip(alone, together, strict=True):
        assert np.array_equal(one, other)
