"""Old import path of ``TaggerBundle``: combined models registered before the package was split into
subpackages name ``train.tagging.TaggerBundle`` in their pickle, and still load through this alias."""

from train.tracking.packaging import TaggerBundle

__all__ = ["TaggerBundle"]
