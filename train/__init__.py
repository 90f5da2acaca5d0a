"""tagger: config-driven topic and stance tagging of news sentences, tracked in MLflow."""

__version__ = "0.1.0"
