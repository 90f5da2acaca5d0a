"""Classifiers pickled by tagger before the data format (``classifier.joblib``): the one place that unpickles.

``load_pickled`` reads such a folder with an explicit table of module paths that moved since models
were pickled, and only classes from the modules in ``ALLOWED_MODULES`` (or a registered family's
module); it fills the attributes older pickles lack, and re-attaches the weights the families kept
beside the pickle. ``tagger migrate`` re-saves what this loads in the data format (``persistence``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from joblib.numpy_pickle import NumpyUnpickler

from train.models.persistence import MANIFEST, ModelFormatError

PICKLE = "classifier.joblib"

# old module path -> today's, for classes named in pickles of older package layouts
MOVED_MODULES = {
    "train.pyfunc": "train.tracking.packaging",
    "train.tagging": "train.tracking.packaging",
}
# top-level packages whose classes a tagger classifier pickle may name
ALLOWED_MODULES = ("builtins", "copyreg", "_codecs", "collections", "numpy", "scipy", "sklearn", "joblib", "train")

log = logging.getLogger("tagger")


def is_pickled(folder: Path) -> bool:
    """Whether ``folder`` holds a classifier pickled by an older tagger (and no manifest)."""
    return (Path(folder) / PICKLE).is_file() and not (Path(folder) / MANIFEST).is_file()


class _Unpickler(NumpyUnpickler):
    """joblib's unpickler, with moved module paths mapped and classes only from known modules."""

    def find_class(self, module: str, name: str) -> Any:
        from train.registry import model_families

        module = MOVED_MODULES.get(module, module)
        families = {cls.__module__ for cls in model_families.get_all().values()}
        if module.split(".")[0] not in ALLOWED_MODULES and module not in families:
            raise ModelFormatError(f"{self.filename}: names {module}.{name}, which a tagger classifier never holds")
        return super().find_class(module, name)


def load_pickled(folder: Path) -> Any:
    """The classifier pickled in ``folder`` by an older tagger, completed to today's attributes."""
    folder = Path(folder)
    path = folder / PICKLE
    log.debug("loading the pickled classifier %s (legacy loader)", path)
    with open(path, "rb") as handle:
        classifier = _Unpickler(str(path), handle, ensure_native_byte_order=True).load()
    n = len(classifier.labels)
    defaults = {
        "thresholds_": np.full(n, 0.5),
        "offsets_": np.zeros(n),  # before class offsets: plain arg-max
        "priors_": None,  # before prior correction: --adjust-priors explains there are none
        "parity_": {},  # before parity figures: auto keeps the configured backend
    }
    for name, value in defaults.items():
        if not hasattr(classifier, name):
            setattr(classifier, name, value)
    _restore_weights(classifier, folder)
    return classifier


def _restore_weights(classifier: Any, folder: Path) -> None:
    """Re-attach the weights families kept beside the pickle (TF-IDF and plug-ins kept all in it)."""
    from train.registry import family_name

    try:
        family = family_name(type(classifier))
    except ValueError:
        return
    if family in ("embedding_logreg", "static_logreg"):  # the head was in the pickle; the encoder beside it
        saved = {"embedding_logreg": "_use_saved_encoder", "static_logreg": "_use_saved_static"}[family]
        getattr(classifier, saved)(folder)
    elif family == "transformer":  # hf/ and onnx/, as today
        classifier._load_weights(folder)
    elif family == "setfit":  # SetFit's folder, with its pickled head (model_head.pkl)
        from setfit import SetFitModel

        classifier.model_ = SetFitModel.from_pretrained(str(folder / "setfit"))
