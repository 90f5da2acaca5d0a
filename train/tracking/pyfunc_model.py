"""MLflow "model from code" of a one-task tagger model: logged as the file itself (``python_model``),
so MLflow pickles nothing. MLflow runs this file when it loads the model (``mlflow models serve``,
``spark_udf``); the classifier is read from the ``classifier`` artifact (``TaggerModel.load_context``)."""

import mlflow.models

from train.tracking.packaging import TaggerModel

mlflow.models.set_model(TaggerModel())
