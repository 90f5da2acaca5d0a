"""``transformer`` family: fine-tune a Hugging Face encoder with the ``Trainer``.

A thin wrapper: ``AutoModelForSequenceClassification`` (multi-label: sigmoid outputs and BCE loss;
multi-class: softmax and cross-entropy), the stock ``Trainer`` with its ``EarlyStoppingCallback``
on dev macro F1, and two small additions: class-weighted losses (``compute_loss``) and a callback
that logs the learning curves to the active MLflow run. For stance the target and the sentence go
in as a text pair. Inference sorts sentences by length and pads per batch, under
``torch.inference_mode``, or runs an ONNX export with ONNX Runtime (optionally int8-quantised).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from train.models.base import TextClassifier, mask_actors
from train.models.catalog import TRANSFORMER
from train.models.encoder import length_sorted_batches, load_tokenizer, resolve_encoder, set_threads
from train.registry import register_family

log = logging.getLogger("tagger")
BACKENDS = ("torch", "onnx", "onnx-int8")


def quantize(source: Path, target: Path) -> Path:
    """Dynamic int8 quantisation of an ONNX model (weights int8, activations quantised at run time), with
    the embeddings and the first half of the encoder layers kept in fp32.

    Signed weights with one scale per output channel. On the fine-tuned MiniLM (``bench/int8.py``,
    1,098 sentences, against torch) every node in int8 agreed on 97.1% of topic sets; measured one node
    at a time on training sentences, the most sensitive nodes are the first layers' feed-forward
    MatMuls and the embedding lookups. Keeping those in fp32 agreed on 99.5% at 1.5× ONNX fp32's speed;
    static QDQ calibration (MinMax, Entropy, Percentile) agreed on 92% at most.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    excluded = sensitive_nodes(source)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantiser logs a line per tensor, and advice on pre-processing
    try:
        quantize_dynamic(
            str(source), str(target), weight_type=QuantType.QInt8, per_channel=True, nodes_to_exclude=excluded
        )
    finally:
        root.setLevel(level)
    return target


def sensitive_nodes(path: Path) -> list[str]:
    """The nodes :func:`quantize` keeps in fp32: the embeddings and the first half of the encoder layers
    (exported node names such as ``/bert/encoder/layer.0/output/dense/MatMul``); none if unnamed so."""
    import re

    import onnx

    names = [node.name for node in onnx.load(str(path), load_external_data=False).graph.node]
    layers = [int(m.group(1)) for m in map(re.compile(r"/layer\.(\d+)/").search, names) if m]
    early = (max(layers) + 2) // 2 if layers else 0  # layers 0-2 of MiniLM-L6's six
    keep = []
    for name in names:
        match = re.search(r"/layer\.(\d+)/", name)
        if "/embeddings/" in name or (match and int(match.group(1)) < early):
            keep.append(name)
    return keep


def _macro_f1(logits: np.ndarray, labels: np.ndarray, multilabel: bool) -> float:
    from sklearn.metrics import f1_score

    if multilabel:
        return float(f1_score(labels, logits > 0, average="macro", zero_division=0))
    return float(f1_score(labels, logits.argmax(-1), average="macro", zero_division=0))


@register_family(TRANSFORMER)
class TransformerClassifier(TextClassifier):
    """A fine-tuned encoder with a classification head."""

    requirements = ("torch", "transformers", "onnxruntime", "onnx")
    backends = BACKENDS

    def __init__(self, task_type: str, labels: list[str], seed: int = 13, **params):
        super().__init__(task_type, labels, seed, **params)
        self.backend = self.params["backend"]

    # --- inputs ------------------------------------------------------------------------------
    def _pairs(self, X: pd.DataFrame) -> tuple[list[str], list[str] | None]:
        texts = X["text"].astype(str).tolist()
        if self.multilabel or "target" not in X.columns or not X["target"].fillna("").str.strip().any():
            return texts, None
        targets = X["target"].fillna("").astype(str).tolist()
        if self.params["mask_target_actors"]:
            texts = [mask_actors(t, g) for t, g in zip(texts, targets, strict=True)]
        return texts, targets

    def _tokenize(self, X: pd.DataFrame) -> dict:
        texts, targets = self._pairs(X)
        if targets is None:
            return self.tokenizer_(texts, truncation=True, max_length=self.params["max_length"])
        return self.tokenizer_(targets, texts, truncation="only_second", max_length=self.params["max_length"])

    # --- training ------------------------------------------------------------------------------
    def _fit(self, X, Y, X_dev, Y_dev) -> None:
        import torch
        from datasets import Dataset
        from transformers import (
            AutoModelForSequenceClassification,
            DataCollatorWithPadding,
            TrainingArguments,
            set_seed,
        )

        p = self.params
        set_threads(p["torch_threads"])
        set_seed(self.seed)
        self.reference_ = resolve_encoder(p["name_or_path"])
        self.tokenizer_ = load_tokenizer(self.reference_)
        self.model_ = AutoModelForSequenceClassification.from_pretrained(
            self.reference_,
            num_labels=len(self.labels),
            problem_type="multi_label_classification" if self.multilabel else "single_label_classification",
            id2label=dict(enumerate(self.labels)),
            label2id={label: i for i, label in enumerate(self.labels)},
        )

        def dataset(X_part, Y_part) -> Dataset:
            """Tokenised once (not per epoch), with each sentence's length for length-grouped batches."""
            encoded = dict(self._tokenize(X_part))
            encoded["labels"] = Y_part.astype(np.float32) if self.multilabel else Y_part.astype(np.int64)
            encoded["length"] = [len(ids) for ids in encoded["input_ids"]]
            return Dataset.from_dict(encoded)

        train_set = dataset(X, Y)
        dev_set = dataset(X_dev, Y_dev) if X_dev is not None and len(X_dev) else None
        if dev_set is not None:  # evaluated in length order: little padding (metrics do not depend on order)
            dev_set = dev_set.sort("length")
        has_dev = dev_set is not None
        stop_early = has_dev and p["early_stopping_patience"] is not None
        keep_best = _KeepBest(p["early_stopping_patience"]) if stop_early else None
        with tempfile.TemporaryDirectory(prefix="tagger-trainer-") as out:
            args = TrainingArguments(
                output_dir=out,
                num_train_epochs=p["epochs"],
                max_steps=p["max_steps"] or -1,
                per_device_train_batch_size=p["batch_size"],
                per_device_eval_batch_size=p["eval_batch_size"],
                gradient_accumulation_steps=p["gradient_accumulation_steps"],
                learning_rate=p["learning_rate"],
                weight_decay=p["weight_decay"],
                warmup_steps=p["warmup_ratio"],
                eval_strategy="epoch" if has_dev else "no",
                save_strategy="no",  # the best weights are kept in memory (_KeepBest), not written per epoch
                train_sampling_strategy="group_by_length",  # dynamic padding wastes little in batches of like length
                length_column_name="length",
                logging_steps=p["logging_steps"],
                report_to="none",
                seed=self.seed,
                data_seed=self.seed,
                use_cpu=not torch.cuda.is_available(),
                dataloader_num_workers=0,
            )
            trainer = _WeightedTrainer(
                model=self.model_,
                args=args,
                train_dataset=train_set,
                eval_dataset=dev_set,
                data_collator=DataCollatorWithPadding(self.tokenizer_),
                compute_metrics=lambda pred: {"f1_macro": _macro_f1(pred.predictions, pred.label_ids, self.multilabel)},
                callbacks=[_Curves(), *([keep_best] if keep_best else [])],
            )
            # progress goes to the log (stderr) through _Curves, not tqdm bars or printed dicts on stdout
            trainer.remove_callback(PrinterCallback)
            trainer.remove_callback(ProgressCallback)
            trainer.loss_weights = self._loss_weights(Y) if p["class_weights"] else None
            trainer.train()
        self.model_ = trainer.model.to("cpu").eval()
        self.sessions_: dict = {}

    def _loss_weights(self, Y: np.ndarray) -> np.ndarray:
        """Positive-class weights (multi-label) or class weights (multi-class), capped at 10."""
        if self.multilabel:
            positives = Y.sum(axis=0).clip(min=1)
            return np.clip((len(Y) - positives) / positives, 0.1, 10.0)
        counts = np.bincount(Y, minlength=len(self.labels)).clip(min=1)
        return np.clip(len(Y) / (len(self.labels) * counts), 0.1, 10.0)

    # --- inference -----------------------------------------------------------------------------
    def set_backend(self, backend: str, force: bool = False) -> str:
        self.backend = super().set_backend(backend, force)
        return self.backend

    def measure_parity(self, X) -> dict[str, dict[str, float]]:
        """As the base class; a model not yet saved exports its ONNX files to a temporary folder,
        removed afterwards (``save`` writes its own)."""
        if getattr(self, "onnx_dir_", None):
            return super().measure_parity(X)
        with tempfile.TemporaryDirectory(prefix="tagger-onnx-") as folder:
            self.onnx_dir_ = Path(folder)
            try:
                return super().measure_parity(X)
            finally:
                self.onnx_dir_ = None
                self.sessions_ = {}

    def _logits_torch(self, batch: dict) -> np.ndarray:
        import torch

        with torch.inference_mode():
            tensors = {k: torch.as_tensor(v) for k, v in batch.items()}
            return self.model_(**tensors).logits.float().numpy()

    def _logits_onnx(self, batch: dict) -> np.ndarray:
        session = self._session(self.backend)
        names = {i.name for i in session.get_inputs()}
        feeds = {k: np.asarray(v, dtype=np.int64) for k, v in batch.items() if k in names}
        return session.run(["logits"], feeds)[0]

    def _scores(self, X: pd.DataFrame) -> np.ndarray:
        encoded = self._tokenize(X)
        lengths = [len(ids) for ids in encoded["input_ids"]]
        logits = np.zeros((len(X), len(self.labels)), dtype=np.float32)
        run = self._logits_torch if self.backend == "torch" else self._logits_onnx
        for batch in length_sorted_batches(lengths, self.params["eval_batch_size"]):
            padded = self.tokenizer_.pad({k: [encoded[k][i] for i in batch] for k in encoded}, return_tensors="np")
            logits[batch] = run(dict(padded))
        if self.multilabel:
            return 1 / (1 + np.exp(-logits))
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)

    # --- ONNX -----------------------------------------------------------------------------------
    def export_onnx(self, path: Path) -> Path:
        """Export the fine-tuned model to ONNX (dynamic batch and sequence axes)."""
        import torch

        sample = self.tokenizer_(["an example sentence"], return_tensors="pt")
        names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]
        axes = {n: {0: "batch", 1: "sequence"} for n in names}
        axes["logits"] = {0: "batch"}
        path.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():  # tracer notes on the exporter's own handling of BERT's ops
            warnings.simplefilter("ignore")
            torch.onnx.export(
                self.model_,
                tuple(sample[n] for n in names),
                str(path),
                input_names=names,
                output_names=["logits"],
                dynamic_axes=axes,
                opset_version=17,
                dynamo=False,
            )
        return path

    def _session(self, backend: str):
        if backend not in self.sessions_:
            import onnxruntime as ort

            folder = (
                self.onnx_dir_ if getattr(self, "onnx_dir_", None) else Path(tempfile.mkdtemp(prefix="tagger-onnx-"))
            )
            fp32 = folder / "model.onnx"
            if not fp32.exists():
                self.export_onnx(fp32)
            path = fp32
            if backend == "onnx-int8":
                path = folder / "model.int8.onnx"
                if not path.exists():
                    quantize(fp32, path)
            options = ort.SessionOptions()
            # the CPUs this process may use (not every core of the machine), and no busy-waiting
            # between requests: a server's idle threads must not burn the cores it shares
            options.intra_op_num_threads = self.params["torch_threads"] or len(os.sched_getaffinity(0))
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self.sessions_[backend] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return self.sessions_[backend]

    # --- persistence ------------------------------------------------------------------------------
    def learned_state(self) -> dict:
        return {}

    def _save_weights(self, folder: Path) -> None:
        """Hugging Face weights (safetensors, ``config.json``) and tokenizer, and the ONNX exports."""
        self.model_.save_pretrained(folder / "hf")
        self.tokenizer_.save_pretrained(folder / "hf")
        self.export_onnx(folder / "onnx" / "model.onnx")
        quantize(folder / "onnx" / "model.onnx", folder / "onnx" / "model.int8.onnx")

    def _load_weights(self, folder: Path) -> None:
        from transformers import AutoModelForSequenceClassification

        set_threads(self.params["torch_threads"])
        self.tokenizer_ = load_tokenizer(str(folder / "hf"))
        self.model_ = AutoModelForSequenceClassification.from_pretrained(str(folder / "hf")).eval()
        self.onnx_dir_ = folder / "onnx"
        self.sessions_ = {}

    def model_info(self) -> dict[str, float]:
        parameters = sum(p.numel() for p in self.model_.parameters())
        size = sum(p.numel() * p.element_size() for p in self.model_.parameters())
        return {"model_parameters": float(parameters), "model_size_mb": size / 2**20}


from transformers import PrinterCallback, ProgressCallback, Trainer, TrainerCallback  # noqa: E402  (kept below the family for reading order)


class _WeightedTrainer(Trainer):
    """The stock Trainer with optional class weights in the loss."""

    loss_weights: np.ndarray | None = None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.loss_weights is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        import torch

        labels = inputs.pop("labels")
        outputs = model(**inputs)
        weights = torch.as_tensor(self.loss_weights, dtype=outputs.logits.dtype, device=outputs.logits.device)
        if model.config.problem_type == "multi_label_classification":
            loss = torch.nn.functional.binary_cross_entropy_with_logits(outputs.logits, labels, pos_weight=weights)
        else:
            loss = torch.nn.functional.cross_entropy(outputs.logits, labels, weight=weights)
        return (loss, outputs) if return_outputs else loss


class _KeepBest(TrainerCallback):
    """Early stopping on dev macro F1 that keeps the best weights in memory and restores them at the end
    (the stock route writes a checkpoint to disk every epoch to do the same)."""

    def __init__(self, patience: int):
        self.patience = patience
        self.best: float | None = None
        self.best_state: dict | None = None
        self.waited = 0

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        score = (metrics or {}).get("eval_f1_macro")
        if score is None or model is None:
            return
        if self.best is None or score > self.best:
            self.best, self.waited = score, 0
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            self.waited += 1
            if self.waited >= self.patience:
                control.should_training_stop = True

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self.best_state is not None and model is not None:
            model.load_state_dict(self.best_state)
            log.info("kept the weights of the best epoch (dev macro F1 %.4f)", self.best)


class _Curves(TrainerCallback):
    """Training loss, dev macro F1 and seconds per epoch as metric histories (learning curves) of the
    open run, whatever records it (``train.tracking.recorder.report``), and as progress lines in the log."""

    epoch_started = 0.0

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.epoch_started = time.perf_counter()

    def on_epoch_end(self, args, state, control, **kwargs):
        from train.tracking.recorder import report

        seconds = time.perf_counter() - self.epoch_started
        log.info("epoch %.0f: %.1f s", state.epoch or 0, seconds)
        report({"train/epoch_seconds": seconds}, step=round(state.epoch or 0))

    def on_log(self, args, state, control, logs=None, **kwargs):
        from train.tracking.recorder import report

        logs = logs or {}
        metrics = {}
        if "loss" in logs:
            metrics["train/loss"] = logs["loss"]
            log.info(
                "step %d/%d (epoch %.2f): loss %.4f", state.global_step, state.max_steps, state.epoch or 0, logs["loss"]
            )
        if "eval_f1_macro" in logs:
            metrics["dev/epoch_f1_macro"] = logs["eval_f1_macro"]
            log.info("epoch %.0f: dev macro F1 %.4f", state.epoch or 0, logs["eval_f1_macro"])
        if "eval_loss" in logs:
            metrics["dev/loss"] = logs["eval_loss"]
        report(metrics, step=state.global_step)
