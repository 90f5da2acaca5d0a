"""MLflow "model from code" of the combined topic + stance model (registered as ``tagger``): logged as
the file itself (``python_model``), so MLflow pickles nothing; the classifiers are read from the
``topic`` and ``stance`` artifacts (``TaggerBundle.load_context``)."""

import mlflow.models

from train.tracking.packaging import TaggerBundle

mlflow.models.set_model(TaggerBundle())
