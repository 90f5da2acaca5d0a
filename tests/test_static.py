"""The static-embedding family's encoder: the same vectors as model2vec's own ``encode``, at bulk speed."""

import numpy as np
import pytest

from train.models.static import StaticEncoder, distilled_model


@pytest.fixture(scope="module")
def static(tiny_encoder, tmp_path_factory):
    return distilled_model(tiny_encoder, 16, tmp_path_factory.mktemp("static-cache"))


def test_distilled_model_is_cached_once(static, tiny_encoder, tmp_path):
    first = distilled_model(tiny_encoder, 16, tmp_path)
    made = sorted(p.name for p in tmp_path.iterdir())
    again = distilled_model(tiny_encoder, 16, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == made and len(made) == 1  # no staging folder left
    assert np.array_equal(np.asarray(first.embedding), np.asarray(again.embedding))


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
