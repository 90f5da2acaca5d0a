"""Training data must not contain evaluation sentences or near-copies of them."""

from conftest import SEEDS_FILE, TRAIN_FILE, read_jsonl

from train.data.leakage import find_leaks


def test_exact_and_near_duplicates_are_found():
    evals = ["Iraq relies heavily on Iranian electricity and gas imports to power its cities."]
    train = [
        "Iraq relies heavily on Iranian electricity and gas imports to power its cities.",  # exact
        "IRAQ relies heavily on Iranian electricity & gas imports to power its cities!",  # normalised exact
        "Iraq relies heavily on Iranian electricity and gas imports to power its big cities.",  # near copy
        "Turkey signed a new pipeline agreement with Azerbaijan on Monday.",  # unrelated
    ]
    leaks = find_leaks(train, evals, threshold=0.8)
    assert sorted(leak.train_index for leak in leaks) == [0, 1, 2]
    assert all(leak.similarity >= 0.8 for leak in leaks)


def test_threshold_controls_near_duplicates():
    a = ["The minister visited the border crossing on Monday."]
    b = ["The minister visited the new border crossing at dawn on Monday."]
    assert find_leaks(a, b, threshold=0.5)
    assert not find_leaks(a, b, threshold=0.95)


def test_shipped_training_data_does_not_leak_seeds():
    train = [r["text"] for r in read_jsonl(TRAIN_FILE)]
    seeds = [r["text"] for r in read_jsonl(SEEDS_FILE)]
    leaks = find_leaks(train, seeds, threshold=0.8)
    assert leaks == [], [(leak.train_text, leak.eval_text) for leak in leaks[:5]]
