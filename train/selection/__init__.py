"""Choosing sentences to label (``tagger select``) and reading labels back from Label Studio (``import-labels``)."""
