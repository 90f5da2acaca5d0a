"""The exception types for user errors: the CLI prints the message on one line and exits with status 2."""


class TaggerError(Exception):
    """A problem with the user's input (config, data, model reference) rather than a bug."""


class DeadlineExceeded(TaggerError):
    """Work on one input ran past its time budget (e.g. splitting a huge unpunctuated text)."""
