"""Data: loading and checking labelled files, train/dev splits, leakage checks, sentence splitting."""
