"""The one exception type for user errors: the CLI prints its message on one line and exits non-zero."""


class TaggerError(Exception):
    """A problem with the user's input (config, data, model reference) rather than a bug."""
