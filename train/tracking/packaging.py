"""How tagger models are packaged as MLflow pyfunc models, and loaded back by reference.

``TaggerModel`` wraps one classifier (one task); ``TaggerBundle`` wraps a topic and a stance
classifier together (registered as ``tagger``). Both keep the classifier's own folder (manifest and
weights, ``train.models.persistence``) as the artifact ``classifier`` (``topic``/``stance`` for the
bundle) and the ``train`` package as code. They are logged as MLflow "models from code"
(``pyfunc_model.py``, ``pyfunc_bundle.py``), so MLflow pickles nothing; tagger itself loads a model
folder as data (``wrapper_from_folder``), running no code from it. This module is the only place
that knows the pyfunc flavour.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path
from urllib.parse import unquote

import mlflow
import mlflow.pyfunc
import pandas as pd

from train.config import PACKAGE_ROOT
from train.domain import DEFAULT_TARGET
from train.errors import TaggerError
from train.models import legacy
from train.models.base import TextClassifier
from train.outputs import classifier_frame, model_inputs, score_pair, tag_frame
from train.tracking.store import RUN_ID, RUN_ID_PREFIX, resolve_run_id

ARTIFACT_KEY = "classifier"
MODEL_CODE = Path(__file__).with_name("pyfunc_model.py")  # python_model of a one-task model
BUNDLE_CODE = Path(__file__).with_name("pyfunc_bundle.py")  # python_model of the combined model
log = logging.getLogger("tagger")


class TaggerModel(mlflow.pyfunc.PythonModel):
    """Input: a DataFrame with ``text`` (and ``target`` for stance). Output, one row per sentence:
    ``topics`` (multi-label: the chosen labels) or ``stance`` (multi-class), and ``score_<label>``."""

    def __init__(self, classifier: TextClassifier | None = None):
        self.classifier = classifier

    def load_context(self, context) -> None:
        self.classifier = open_classifier(Path(context.artifacts[ARTIFACT_KEY]))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return predict_frame(self.classifier, model_input)


def predict_frame(classifier: TextClassifier, inputs: pd.DataFrame) -> pd.DataFrame:
    """Tag a DataFrame of sentences with one classifier (``TaggerModel``'s output)."""
    return classifier_frame(classifier, classifier.predict_proba(model_inputs(inputs)))


class TaggerBundle(mlflow.pyfunc.PythonModel):
    """Topic + stance in one pyfunc (registered as ``tagger``), e.g. for ``mlflow models serve`` or Spark.

    Input: a DataFrame with ``text`` and optional ``target`` (default "closer Iran–Iraq ties").
    Output: ``topics`` (list), ``stance``, and ``topic_score_<label>`` / ``stance_score_<label>``.
    """

    def load_context(self, context) -> None:
        self.topic = open_classifier(Path(context.artifacts["topic"]))
        self.stance = open_classifier(Path(context.artifacts["stance"]))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        frame = model_inputs(model_input, DEFAULT_TARGET)
        return tag_frame(self.topic, self.stance, *score_pair(self.topic, self.stance, frame))


def open_classifier(folder: Path) -> TextClassifier:
    """The classifier saved in ``folder``: the data format, or a pickle of an older tagger (legacy loader)."""
    return legacy.load_pickled(folder) if legacy.is_pickled(folder) else TextClassifier.load(folder)


def model_artifacts(folder: Path) -> tuple[dict[str, Path], bool]:
    """The artifact folders of the tagger pyfunc model in ``folder`` (key -> path), and whether MLflow
    pickled its wrapper (``python_model.pkl``: a model logged by an older tagger)."""
    import yaml

    path = folder / "MLmodel"
    if not path.is_file():
        raise TaggerError(f"{folder}: not an MLflow model folder (no MLmodel file)")
    try:
        flavor = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("flavors", {}).get("python_function")
    except (yaml.YAMLError, AttributeError, UnicodeDecodeError):
        flavor = None
    if not isinstance(flavor, dict):
        raise TaggerError(f"{folder}: not a tagger model (no python_function flavour)")
    root = folder.resolve()
    artifacts = {}
    for key, spec in (flavor.get("artifacts") or {}).items():
        artifact = (folder / str((spec or {}).get("path", ""))).resolve()
        if not artifact.is_relative_to(root):
            raise TaggerError(f"{folder}: artifact '{key}' lies outside the model folder")
        artifacts[key] = artifact
    return artifacts, str(flavor.get("python_model", "")).endswith(".pkl")


def wrapper_from_folder(folder: Path, reference: str | None = None) -> TaggerModel | TaggerBundle:
    """The tagger model in a local MLflow model folder, read as data (no code from the folder runs;
    only a model of an older tagger is unpickled, by the legacy loader, with a warning)."""
    artifacts, pickled = model_artifacts(folder)
    if {"topic", "stance"} <= set(artifacts):
        wrapper: TaggerModel | TaggerBundle = TaggerBundle()
        wrapper.topic, wrapper.stance = open_classifier(artifacts["topic"]), open_classifier(artifacts["stance"])
    elif ARTIFACT_KEY in artifacts:
        wrapper = TaggerModel(open_classifier(artifacts[ARTIFACT_KEY]))
    else:
        raise TaggerError(f"model '{reference or folder}': not a tagger model")
    if pickled or any(legacy.is_pickled(a) for a in artifacts.values()):
        log.warning(
            "model '%s' was saved by an older tagger as pickles (loaded by the legacy loader, which runs their "
            "code); convert it with: tagger migrate %s",
            reference or folder,
            reference or folder,
        )
    return wrapper


def is_legacy_folder(folder: Path) -> bool:
    """Whether the MLflow model folder holds pickles of an older tagger (what ``tagger migrate`` converts)."""
    artifacts, pickled = model_artifacts(folder)
    return pickled or any(legacy.is_pickled(a) for a in artifacts.values())


def model_uri(reference: str) -> str:
    """A run id (or its unique prefix), ``runs:/``/``models:/`` URI or local folder → an MLflow model URI.

    A model of an older tagger is a pickle: loading it runs its code. So models come only from the
    configured tracking store (run ids, ``runs:/``, ``models:/``) or from a local model folder the user
    names; other URIs (``http://``, ``s3://``, ...) and any ``..`` are refused.
    """
    if reference.startswith(("runs:/", "models:/")):
        scheme, _, rest = reference.partition(":/")
        parts = unquote(rest).replace("\\", "/").split("/")
        if any(part in ("..", ".") for part in parts):
            raise TaggerError(f"model '{reference}': '..' and '.' are not allowed in a model URI")
        if scheme == "runs" and not RUN_ID.match(parts[0]):
            if not RUN_ID_PREFIX.match(parts[0]):
                raise TaggerError(
                    f"model '{reference}': expected runs:/<32-character run id, or its unique prefix of 8 or more>"
                    "/<artifact path>"
                )
            run_id = resolve_run_id(parts[0])  # a unique prefix, as 'tagger runs' shows it
            return f"runs:/{run_id}/" + "/".join(parts[1:])
        return reference
    if "://" in reference:
        raise TaggerError(
            f"model '{reference}': only run ids, runs:/ or models:/ URIs (from the configured tracking store) "
            "or a local model folder are accepted"
        )
    path = Path(reference)
    if ".." in path.parts:
        raise TaggerError(f"model '{reference}': '..' is not allowed; name the model folder itself")
    if path.exists():
        if not path.is_dir() or not (path / "MLmodel").is_file():
            raise TaggerError(f"{path}: not an MLflow model folder (no MLmodel file)")
        return str(path.resolve())
    if RUN_ID_PREFIX.match(reference):  # a whole run id, or a unique prefix of one (as 'tagger runs' shows)
        return f"runs:/{resolve_run_id(reference)}/model"
    raise TaggerError(f"model '{reference}': not a run id, models:/ or runs:/ URI, or a model folder")


def artifact_roots() -> list[Path]:
    """Local folders the tracking store keeps artifacts in: ``mlartifacts/`` and each local experiment location."""
    from urllib.parse import urlsplit

    from train.tracking import store

    roots = [store.home() / "mlartifacts"]
    try:
        experiments = mlflow.MlflowClient().search_experiments(view_type=mlflow.entities.ViewType.ALL)
    except Exception:  # noqa: BLE001 - a store that cannot list experiments has no local roots to add
        experiments = []
    for experiment in experiments:
        location = experiment.artifact_location or ""
        parts = urlsplit(location)
        if parts.scheme in ("", "file"):
            roots.append(Path(unquote(parts.path) if parts.scheme else location))
    return [Path(os.path.realpath(root)) for root in roots]


def check_in_store(uri: str) -> str:
    """Where ``runs:/``/``models:/`` ``uri`` lives; a local location outside the store's artifact roots is refused."""
    from urllib.parse import urlsplit

    from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository
    from mlflow.store.artifact.runs_artifact_repo import RunsArtifactRepository

    try:
        if uri.startswith("runs:/"):
            underlying = RunsArtifactRepository.get_underlying_uri(uri)
        else:
            underlying = ModelsArtifactRepository.get_underlying_uri(uri)
    except Exception:  # noqa: BLE001 - an unknown run or model: the load reports it
        return uri
    parts = urlsplit(underlying)
    if parts.scheme not in ("", "file"):
        return underlying  # a tracking server's proxied artifacts, or a remote store the server chose
    local = Path(os.path.realpath(unquote(parts.path) if parts.scheme else underlying))
    if not any(local.is_relative_to(root) for root in artifact_roots()):
        raise TaggerError(f"model '{uri}': resolves to {local}, outside the tracking store's artifact folders")
    return str(local)


_LOAD_LOCK = threading.Lock()


def load_pyfunc(uri: str):
    """``mlflow.pyfunc.load_model`` without its lasting side effect on ``sys.path``.

    MLflow prepends each model's ``code/`` folder to ``sys.path`` and never removes it, so every
    reload of a server grew it. The package is already imported, so the path is restored after the load
    (under a lock: ``sys.path`` is process-wide).
    """
    with _LOAD_LOCK:
        saved = list(sys.path)
        try:
            return mlflow.pyfunc.load_model(uri)
        finally:
            sys.path[:] = saved


def load_wrapper(reference: str) -> TaggerModel | TaggerBundle:
    """The tagger pyfunc behind a model reference: one classifier, or the combined topic + stance model."""
    uri = model_uri(reference)
    source = uri
    if uri.startswith(("runs:/", "models:/")):
        from train.tracking import store

        if not mlflow.is_tracking_uri_set():
            store.setup()  # the configured store: MLFLOW_TRACKING_URI, else the embedded one
        source = check_in_store(uri)
    log.info("loading model %s from %s", reference, source)
    try:
        folder = local_folder(uri)
        return wrapper_from_folder(folder, reference)
    except TaggerError:
        raise
    except Exception as exc:  # MLflow, skops and the libraries of the weights raise several types
        raise TaggerError(f"model '{reference}': cannot load ({type(exc).__name__}: {exc})") from None


def local_folder(uri: str) -> Path:
    """The local folder of a model URI (``model_uri``'s result): downloaded from the store for
    ``runs:/``/``models:/`` (into a temporary folder kept for the process: weights are read lazily)."""
    if uri.startswith(("runs:/", "models:/")):
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    return Path(uri)


def set_backend(classifiers: list[TextClassifier], backend: str | None, force: bool = False) -> None:
    """Choose the inference backend of the classifiers whose family has it.

    ``auto`` lets each classifier pick its fastest backend that held parity. A named backend that no
    classifier has is an error, as is one below parity (unless ``force``).
    """
    if not backend:
        return
    if backend == "auto":
        chosen = classifiers
    else:
        chosen = [c for c in classifiers if backend in c.backends]
        if not chosen:
            families = ", ".join(f"{type(c).__name__} ({'/'.join(c.backends)})" for c in classifiers)
            raise TaggerError(f"--backend {backend}: no model here has it ({families})")
    for classifier in chosen:
        try:
            classifier.set_backend(backend, force)
        except ValueError as exc:
            raise TaggerError(f"--backend {backend}: {exc}") from None


def load_classifier(reference: str, backend: str | None = None, force_backend: bool = False) -> TextClassifier:
    """Load the one-task classifier behind a model reference, optionally choosing its backend."""
    wrapper = load_wrapper(reference)
    if isinstance(wrapper, TaggerBundle):
        raise TaggerError(
            f"model '{reference}' is the combined topic + stance model; use 'tagger predict' or 'tagger tag' with it"
        )
    set_backend([wrapper.classifier], backend, force_backend)
    return wrapper.classifier


def pinned_requirements(extra: tuple[str, ...] = ()) -> list[str]:
    """Pinned pip requirements of a logged model: the common stack plus ``extra`` packages."""
    from importlib import metadata

    names = ["mlflow", "scikit-learn", "skops", "numpy", "pandas", "pydantic", "catalogue", "pysbd", "pyyaml", *extra]
    pins = []
    for name in names:
        try:
            pins.append(f"{name}=={metadata.version(name).split('+')[0]}")
        except metadata.PackageNotFoundError:
            pins.append(name)
    return pins


def classifier_model_arguments(model: TextClassifier, example: pd.DataFrame, workdir: Path) -> dict:
    """What ``mlflow.pyfunc.log_model``/``save_model`` need for a one-task ``TaggerModel`` (``model`` is
    saved into ``workdir``); ``example``: input rows, of which the first three become the input example."""
    path = workdir / ARTIFACT_KEY
    model.save(path)
    example = example.head(3).copy()
    if not example["target"].str.strip().any():
        example = example[["text"]]
    return {
        "python_model": str(MODEL_CODE),
        "artifacts": {ARTIFACT_KEY: str(path)},
        "code_paths": [str(PACKAGE_ROOT)],
        "signature": mlflow.models.infer_signature(example, predict_frame(model, example)),
        "input_example": example,
        "pip_requirements": pinned_requirements(tuple(model.requirements)),
    }


def log_classifier(model: TextClassifier, example: pd.DataFrame, workdir: Path):
    """Log ``model`` in the active run as a ``TaggerModel`` pyfunc, with signature and input example."""
    return mlflow.pyfunc.log_model(name="model", **classifier_model_arguments(model, example, workdir))


def named_folder(folder: Path, name: str) -> Path:
    """``folder`` under the name ``name``: MLflow saves each artifact folder under its own base name, and
    numbers folders that share one (two ``classifier`` folders became ``artifacts/0`` and ``artifacts/1``).
    A folder of another name is linked (or copied) to ``<folder>.named/<name>`` beside it."""
    import shutil

    if folder.name == name:
        return folder
    target = folder.with_name(f"{folder.name}.named") / name
    if target.exists():
        shutil.rmtree(target)

    def link(source: str, destination: str) -> None:
        try:
            os.link(source, destination)  # no copy of the weights where the file system allows
        except OSError:
            shutil.copy2(source, destination)

    shutil.copytree(folder, target, copy_function=link)
    return target


def bundle_model_arguments(folders: dict[str, str]) -> dict:
    """What ``mlflow.pyfunc.log_model``/``save_model`` need for a topic + stance ``TaggerBundle``.

    ``folders`` maps ``topic`` and ``stance`` to saved classifier folders (a model's ``artifacts/classifier``);
    a classifier pickled by an older tagger is re-saved in the data format beside its folder first. The
    model holds them as ``artifacts/topic`` and ``artifacts/stance`` (``named_folder``).
    The signature makes ``target`` optional (the default target is used where it is missing).
    """
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types import ColSpec, Schema

    example = pd.DataFrame({"text": ["Both ministers signed a gas supply agreement."], "target": [DEFAULT_TARGET]})
    folders = dict(folders)
    for task in ("topic", "stance"):
        if legacy.is_pickled(Path(folders[task])):
            migrated = Path(f"{folders[task]}.data")
            legacy.load_pickled(Path(folders[task])).save(migrated)
            folders[task] = str(migrated)
        folders[task] = str(named_folder(Path(folders[task]), task))
    topic, stance = (TextClassifier.load(Path(folders[task])) for task in ("topic", "stance"))
    outputs = infer_signature(example, tag_frame(topic, stance, *score_pair(topic, stance, example))).outputs
    inputs = Schema([ColSpec("string", "text"), ColSpec("string", "target", required=False)])
    return {
        "python_model": str(BUNDLE_CODE),
        "artifacts": folders,
        "code_paths": [str(PACKAGE_ROOT)],
        "signature": ModelSignature(inputs=inputs, outputs=outputs),
        "input_example": example,
        "pip_requirements": pinned_requirements(("torch", "transformers", "onnxruntime", "onnx")),
    }


def predict_records(
    reference: str,
    rows: list[dict],
    target: str,
    backend: str | None = None,
    adjust_priors: bool = False,
    force_backend: bool = False,
) -> tuple[list[dict], dict[str, dict[str, tuple[float, float]]]]:
    """Tag sentence dicts (``text``, optional ``target``) with a one-task model or the combined model.

    Rows without a target get ``target``. Returns each row with the model's output added
    (``topics``/``stance`` and ``scores``, or ``topics``/``topic_scores``/``stance``/``stance_scores``),
    and, with ``adjust_priors``, each task's label priors {label: (tuned, this batch)}: the scores are
    then adjusted to the priors EM estimates on these rows (``train.models.prior_shift``).
    """
    from train.outputs import classifier_records, tag_records

    wrapper = load_wrapper(reference)
    targets = [row.get("target") or target for row in rows]
    frame = pd.DataFrame({"text": [row["text"] for row in rows], "target": targets})  # columns, not rows of dicts
    priors = {}

    def scores(classifier: TextClassifier, proba) -> object:
        if not adjust_priors:
            return proba
        try:
            priors[classifier.task_type], proba = classifier.adjust_priors(proba)
        except ValueError as exc:
            raise TaggerError(f"model '{reference}': --adjust-priors: {exc}") from None
        return proba

    if isinstance(wrapper, TaggerBundle):
        set_backend([wrapper.topic, wrapper.stance], backend, force_backend)
        topic_proba, stance_proba = score_pair(wrapper.topic, wrapper.stance, frame)
        records = tag_records(
            wrapper.topic, wrapper.stance, scores(wrapper.topic, topic_proba), scores(wrapper.stance, stance_proba)
        )
    else:
        classifier = wrapper.classifier
        set_backend([classifier], backend, force_backend)
        records = classifier_records(classifier, scores(classifier, classifier.predict_proba(frame)))
        if classifier.multilabel:  # a topic model reads no target: none is echoed
            return [{**row, **record} for row, record in zip(rows, records, strict=True)], priors
    return [
        {**row, "target": given, **record} for row, given, record in zip(rows, targets, records, strict=True)
    ], priors


def export_model(name: str, alias: str, out: Path) -> Path:
    """Copy the registered model ``name@alias`` into ``out``: a folder that loads without the registry."""
    import shutil
    import tempfile

    from train.tracking import store

    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise TaggerError(f"{out}: exists and is not an empty folder")
    store.setup()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(f"models:/{name}@{alias}", dst_path=tmp)
        except Exception as exc:  # noqa: BLE001 - MLflow raises several types
            raise TaggerError(f"models:/{name}@{alias}: cannot export ({exc})") from None
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(local, out, dirs_exist_ok=True)
    return out
