"""Old import path of ``TaggerModel``: models logged before the package was split into subpackages
name ``train.pyfunc.TaggerModel`` in their pickle, and still load through this alias."""

from train.tracking.packaging import TaggerModel

__all__ = ["TaggerModel"]
