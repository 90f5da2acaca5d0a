"""Tracking: the MLflow store, runs, promotion to the registry, and how models are packaged."""
