"""Evaluation: metrics with bootstrap intervals, per-set reports and the score table."""
