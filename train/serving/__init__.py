"""Serving: the topic + stance tagger, micro-batching and the HTTP service."""
