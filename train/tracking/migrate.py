"""``tagger migrate``: re-log a model of an older tagger (pickles) in the data format.

A run's model becomes a new run in the same experiment, with the old run's params, metrics and tags
and a ``tagger.migrated_from`` tag; a registered model (``models:/name@alias`` or ``/version``) gets a
new version (its tags copied) that takes every alias of the old one; a local model folder is written
to ``out``. The old run, version or folder is left as it was.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import mlflow
import pandas as pd

from train.domain import DEFAULT_TARGET
from train.errors import TaggerError
from train.tracking import packaging

MIGRATED_FROM = "tagger.migrated_from"
log = logging.getLogger("tagger")


def _example(wrapper: packaging.TaggerModel) -> pd.DataFrame:
    """An input example for a one-task model (stance models read a target)."""
    texts = ["Both ministers signed a gas supply agreement.", "Militia rockets hit the border post."]
    target = "" if wrapper.classifier.multilabel else DEFAULT_TARGET
    return pd.DataFrame({"text": texts, "target": [target] * len(texts)})


def _save_local(wrapper, out: Path, scratch: Path) -> None:
    """Write ``wrapper`` as a new-format MLflow model folder ``out``."""
    if isinstance(wrapper, packaging.TaggerBundle):
        folders = {}
        for task in ("topic", "stance"):
            folders[task] = str(scratch / task)
            getattr(wrapper, task).save(Path(folders[task]))
        mlflow.pyfunc.save_model(str(out), **packaging.bundle_model_arguments(folders))
    else:
        arguments = packaging.classifier_model_arguments(wrapper.classifier, _example(wrapper), scratch)
        mlflow.pyfunc.save_model(str(out), **arguments)


def _log(wrapper, scratch: Path):
    """Log ``wrapper`` as the model ``model`` of the active run; MLflow's model info."""
    if isinstance(wrapper, packaging.TaggerBundle):
        folders = {}
        for task in ("topic", "stance"):
            folders[task] = str(scratch / task)
            getattr(wrapper, task).save(Path(folders[task]))
        return mlflow.pyfunc.log_model(name="model", **packaging.bundle_model_arguments(folders))
    return packaging.log_classifier(wrapper.classifier, _example(wrapper), scratch)


def _old_folder(uri: str, scratch: Path) -> Path:
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(scratch / "old")))


def migrate_model(reference: str, out: Path | None = None) -> str:
    """Re-log the model ``reference`` (run id, ``runs:/``, ``models:/``, local folder) in the data format.

    Returns what was done, as one line for the user. A model already in the data format is refused.
    """
    uri = packaging.model_uri(reference)
    local = not uri.startswith(("runs:/", "models:/"))
    if local and out is None:
        raise TaggerError(f"tagger migrate {reference}: a local model folder needs --out (the new folder)")
    if not local and out is not None:
        raise TaggerError(f"tagger migrate {reference}: --out is for local model folders; a run is re-logged")
    if out is not None and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise TaggerError(f"{out}: exists and is not an empty folder")
    if not local:
        from train.tracking import store

        if not mlflow.is_tracking_uri_set():
            store.setup()
        packaging.check_in_store(uri)
    with tempfile.TemporaryDirectory(prefix="tagger-migrate-") as tmp:
        scratch = Path(tmp)
        folder = Path(uri) if local else _old_folder(uri, scratch)
        if not packaging.is_legacy_folder(folder):
            raise TaggerError(f"model '{reference}' is already in the data format; nothing to migrate")
        wrapper = packaging.wrapper_from_folder(folder, reference)
        if local:
            _save_local(wrapper, out, scratch / "new")
            return f"migrated {reference} -> {out}"
        if uri.startswith("models:/"):
            return _migrate_version(uri, wrapper, scratch / "new")
        run_id = uri.removeprefix("runs:/").split("/")[0]
        new_run, _ = _relog_run(run_id, wrapper, scratch / "new")
        return f"migrated run {run_id} -> run {new_run} (model runs:/{new_run}/model)"


def _relog_run(run_id: str, wrapper, scratch: Path) -> tuple[str, object]:
    """A new run in ``run_id``'s experiment with its params, metrics and tags, and ``wrapper`` logged."""
    from train.tracking import store

    client = mlflow.MlflowClient()
    old = client.get_run(run_id)
    tags = {k: v for k, v in old.data.tags.items() if not k.startswith("mlflow.")}
    tags.update({**store.process_tags(), MIGRATED_FROM: run_id})
    name = old.data.tags.get("mlflow.runName") or run_id
    with mlflow.start_run(run_name=f"{name}-migrated", experiment_id=old.info.experiment_id, tags=tags) as run:
        if old.data.params:
            mlflow.log_params(old.data.params)
        if old.data.metrics:
            mlflow.log_metrics(old.data.metrics)
        info = _log(wrapper, scratch)
    return run.info.run_id, info


def _migrate_version(uri: str, wrapper, scratch: Path) -> str:
    """A new version of the registered model behind ``uri``, taking every alias of the old version."""
    from train.tracking.promote import registry_lock

    client = mlflow.MlflowClient()
    name, _, selector = uri.removeprefix("models:/").partition("@")
    if selector:
        old = client.get_model_version_by_alias(name, selector)
    else:
        name, _, number = uri.removeprefix("models:/").partition("/")
        old = client.get_model_version(name, number)
    if not old.run_id:
        raise TaggerError(f"model '{uri}': version {old.version} names no run to re-log")
    new_run, info = _relog_run(old.run_id, wrapper, scratch)
    tags = {**old.tags, MIGRATED_FROM: f"models:/{name}/{old.version}"}
    with registry_lock():
        version = mlflow.register_model(info.model_uri, name, tags=tags).version
        if old.description:
            client.update_model_version(name, version, description=old.description)
        aliases = list(client.get_model_version(name, old.version).aliases)
        for alias in aliases:
            client.set_registered_model_alias(name, alias, version)
    moved = f"; aliases {', '.join('@' + a for a in aliases)} moved to it" if aliases else ""
    return f"migrated {name} v{old.version} -> {name} v{version} (run {new_run}){moved}"
