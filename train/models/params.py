"""The params of the built-in families: pydantic models, validated when a config is loaded.

They live apart from the families' code so that checking a config imports neither scikit-learn nor
PyTorch (a config error is reported in well under a second).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from train.models.encoder import check_encoder

MAX_COUNT = 10**7  # upper bound of counts (documents, features, steps): a typo, not a setting, beyond it
MAX_C = 1e6
MAX_NGRAM = 10


class FamilyParams(BaseModel):
    """Base of every family's params: unknown keys, infinities and NaN are refused."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class TfidfParams(FamilyParams):
    """Settings shared by the TF-IDF families."""

    word_ngram_range: tuple[int, int] = (1, 2)
    char_ngram_range: tuple[int, int] | None = (2, 5)
    char_analyzer: Literal["char_wb", "char"] = "char_wb"  # char: n-grams also across spaces (e.g. "#tag w")
    min_df: int = Field(1, ge=1, le=MAX_COUNT)
    max_features: int | None = Field(None, ge=1, le=MAX_COUNT)
    sublinear_tf: bool = True
    lowercase: bool = True
    use_target: bool = True
    mask_target_actors: bool = False
    cross_target: bool = False  # word n-grams also per target (stance): target-specific weights beside shared
    cross_target_min_sentences: int = Field(30, ge=1, le=MAX_COUNT)  # rarer targets use the shared weights only
    cross_target_min_df: int = Field(2, ge=1, le=MAX_COUNT)  # n-grams in fewer training sentences get no target copies
    cross_target_char: bool = False  # with cross_target: the char n-grams get per-target copies too
    C: float = Field(4.0, gt=0, le=MAX_C)
    class_weight: Literal["balanced"] | None = "balanced"

    @field_validator("word_ngram_range", "char_ngram_range")
    @classmethod
    def _ngram_range(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and not 1 <= value[0] <= value[1] <= MAX_NGRAM:
            raise ValueError(f"needs 1 <= min <= max <= {MAX_NGRAM}, got [{value[0]}, {value[1]}]")
        return value


class TfidfSvmParams(TfidfParams):
    C: float = Field(0.5, gt=0, le=MAX_C)
    calibration: Literal["sigmoid", "isotonic"] = "sigmoid"
    calibration_folds: int = Field(3, ge=2, le=20)


class EmbeddingParams(FamilyParams):
    name_or_path: str | None = Field(None, description="local folder or hub id; none = all-MiniLM-L6-v2")
    max_length: int = Field(128, ge=8, le=512)
    batch_size: int = Field(64, ge=1, le=65_536)
    C: float = Field(2.0, gt=0, le=MAX_C)
    class_weight: Literal["balanced"] | None = "balanced"
    use_target: bool = True
    mask_target_actors: bool = False
    cache_dir: str | None = Field(None, description="none = $TAGGER_HOME/.cache/embeddings or ./.cache")
    torch_threads: int | None = Field(None, ge=1, le=1024)

    @field_validator("name_or_path")
    @classmethod
    def _encoder_exists(cls, value: str | None) -> str | None:
        return check_encoder(value)


class StaticParams(FamilyParams):
    name_or_path: str | None = Field(None, description="encoder to distil; none = all-MiniLM-L6-v2")
    pca_dims: int | None = Field(256, ge=2, le=4096, description="PCA dimensions of the token vectors; none = keep all")
    max_length: int | None = Field(512, ge=8, le=MAX_COUNT, description="tokens per sentence; none = no limit")
    C: float = Field(2.0, gt=0, le=MAX_C)
    class_weight: Literal["balanced"] | None = "balanced"
    use_target: bool = True
    mask_target_actors: bool = False
    cache_dir: str | None = Field(None, description="distilled models; none = $TAGGER_HOME/.cache/static or ./.cache")
    torch_threads: int | None = Field(None, ge=1, le=1024, description="threads while distilling")

    @field_validator("name_or_path")
    @classmethod
    def _encoder_exists(cls, value: str | None) -> str | None:
        return check_encoder(value)


class TransformerParams(FamilyParams):
    name_or_path: str | None = Field(None, description="local folder or hub id; none = all-MiniLM-L6-v2")
    learning_rate: float = Field(5e-5, gt=0, le=1)
    epochs: float = Field(4, gt=0, le=1000)
    batch_size: int = Field(16, ge=1, le=65_536)
    eval_batch_size: int = Field(64, ge=1, le=65_536)
    max_length: int = Field(96, ge=8, le=512)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    weight_decay: float = Field(0.01, ge=0, le=1)
    class_weights: bool = True
    early_stopping_patience: int | None = Field(2, ge=1, le=1000)
    gradient_accumulation_steps: int = Field(1, ge=1, le=1024)
    torch_threads: int | None = Field(None, ge=1, le=1024)
    logging_steps: int = Field(20, ge=1, le=MAX_COUNT)
    max_steps: int | None = Field(None, ge=1, le=MAX_COUNT, description="stop after this many steps (quick tests)")
    mask_target_actors: bool = False
    backend: Literal["torch", "onnx", "onnx-int8"] = "torch"

    @field_validator("name_or_path")
    @classmethod
    def _encoder_exists(cls, value: str | None) -> str | None:
        return check_encoder(value)


class SetFitParams(FamilyParams):
    name_or_path: str | None = Field(None, description="local folder or hub id; none = all-MiniLM-L6-v2")
    max_steps: int = Field(
        200, ge=1, le=MAX_COUNT, description="contrastive training steps (batches of sentence pairs)"
    )
    batch_size: int = Field(16, ge=2, le=65_536)
    num_iterations: int = Field(20, ge=1, le=10_000, description="pairs generated per sentence")
    body_learning_rate: float = Field(2e-5, gt=0, le=1)
    max_length: int = Field(128, ge=8, le=512)
    C: float = Field(1.0, gt=0, le=MAX_C)
    class_weight: Literal["balanced"] | None = "balanced"
    use_target: bool = True
    mask_target_actors: bool = False
    torch_threads: int | None = Field(None, ge=1, le=1024)

    @field_validator("name_or_path")
    @classmethod
    def _encoder_exists(cls, value: str | None) -> str | None:
        return check_encoder(value)
