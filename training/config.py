"""Run configuration: one validated, frozen object read from YAML, with dotted overrides.

Every default lives here with a one-line reason; a YAML file in ``configs/`` lists only the
keys it changes (``configs/default.yaml``: two). Unknown keys and bad values are collected and
reported together, naming each key. The Label Studio defaults (``API_KEY_ENV``, ``URL_ENV``,
``SNAPSHOT_DIR``) live here too: the CLI and ``training.labelstudio`` read them from here.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from training.errors import ConfigError

# The environment variable that holds a Label Studio API key (the key never goes in a file).
API_KEY_ENV = "LABEL_STUDIO_API_KEY"
# The environment variable naming the Label Studio server when no URL is given.
URL_ENV = "LABEL_STUDIO_URL"
# Where pulled snapshots go (ignored by git).
SNAPSHOT_DIR = Path("data/snapshots")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AnnotationChoice(_Section):
    """Which annotation of a task becomes the gold standard."""

    # ground_truth first (what reviewers marked), then the most recently updated one.
    prefer: Literal["ground_truth", "latest"] = "ground_truth"
    # Only annotations by this Label Studio user id (or e-mail) count; None = anyone.
    annotator: int | str | None = None


class SplitConfig(_Section):
    """Seeded document-level split, used for tasks whose data names no split."""

    train: float = Field(0.7, ge=0, le=1)
    validation: float = Field(0.15, ge=0, le=1)
    test: float = Field(0.15, ge=0, le=1)
    seed: int = 13
    # A split named in the task data (data.<field>) wins over the seeded split.
    field: str = "split"
    # A final refit once the recipe is fixed: the validation documents join the training ones,
    # nothing selects a checkpoint and the model after the last epoch is kept.
    refit: bool = False

    @model_validator(mode="after")
    def _ratios_sum_to_one(self) -> SplitConfig:
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split ratios must sum to 1, got {total:g}")
        return self


class LabelStudioSource(_Section):
    """A Label Studio project to pull (into a snapshot) instead of an export file."""

    # Server URL; None: $LABEL_STUDIO_URL, else the local server (python -m training labelstudio start).
    url: str | None = None
    project: int = Field(ge=1)
    # The environment variable that holds the API key; the key itself never goes in a config.
    api_key_env: str = Field(API_KEY_ENV, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    # Only tasks with annotations created or updated at or after this ISO 8601 time.
    since: str | None = None
    snapshot_dir: Path = SNAPSHOT_DIR


class AugmentConfig(_Section):
    """Augmented copies of training documents (training split only; never in evaluation)."""

    # Augmented copies per training document; 0 turns augmentation off.
    copies: int = Field(0, ge=0, le=10)
    # Keep the original beside its copies (False: copies replace it, same training cost).
    keep_original: bool = True
    seed: int = 7
    # Chance that a person or company is renamed with a generated name (Faker, many locales).
    mentions: float = Field(0.5, ge=0, le=1)
    # Chance that a surname-only person mention gets an honorific before it (Mr, Dr, Datuk).
    honorifics: float = Field(0.3, ge=0, le=1)
    # Chance of a typography change: straight/curly quotes, --/em dash, US/U.S.
    typography: float = Field(0.5, ge=0, le=1)
    # Chance of a capitalisation change: headline-case first sentence or upper-case dateline.
    case: float = Field(0.3, ge=0, le=1)


class DataConfig(_Section):
    """Where the annotated tasks come from and how they become a dataset."""

    # A Label Studio JSON export (a list of tasks).
    source: Path = Path("data/corpus.json")
    # Pull this Label Studio project into a snapshot and use it as the source instead.
    label_studio: LabelStudioSource | None = None
    # Where the built DatasetDict (and its conversion report) is saved.
    dataset_dir: Path = Path("data/dataset/default")
    text_field: str = "text"
    # The <Labels> name of the labeling config; None accepts any labels result.
    from_name: str | None = None
    annotation: AnnotationChoice = AnnotationChoice()
    # error: stop at the first bad span, naming task and span; drop: skip it and count it.
    invalid_spans: Literal["error", "drop"] = "error"
    # Tasks with identical text (e.g. imported twice): an error, or keep the first and count.
    duplicate_texts: Literal["error", "keep_first"] = "error"
    split: SplitConfig = SplitConfig()
    augment: AugmentConfig = AugmentConfig()

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if self.label_studio is not None and "source" in self.model_fields_set:
            raise ValueError("set data.source (a file) or data.label_studio (a server), not both")
        return self


class ModelConfig(_Section):
    """The encoder and how text is cut into model inputs."""

    # Hub id or local dir; the default is found in its PyPI package when there is no hub.
    name: str = "sentence-transformers/all-MiniLM-L6-v2"
    # Mark capitalised words for encoders that lowercase their input (auto: only for those).
    case_markers: Literal["auto"] | bool = "auto"
    # Window length in subword tokens; longer articles are split into overlapping windows.
    max_length: int = Field(256, ge=16, le=4096)
    # Tokens shared by consecutive windows, so every word sees context on both sides.
    stride: int = Field(64, ge=0)
    # Label every subword (B- on the first, I- on the rest) instead of the first only. On:
    # a plain transformers pipeline reads the case marker as a word of its own and takes the
    # next subword's tag for the rest of the word, so those subwords must carry the entity too.
    label_all_subwords: bool = True
    # Dropout on attention probabilities while fine-tuning (None: the encoder's own, 0.1 for
    # BERT). PyTorch's fused CPU attention kernel has no dropout, so 0 lets training use it:
    # 1.9x faster training steps for MiniLM on 2 cores (benchmarks/training.py).
    attention_dropout: float | None = Field(None, ge=0.0, lt=1.0)
    # viterbi: the best valid BIO sequence (no stray I-, no entity across a line break or of
    # punctuation only): +2.3 F1 on real news; greedy: each word's top tag, for comparison.
    decoding: Literal["viterbi", "greedy"] = "viterbi"

    @model_validator(mode="after")
    def _stride_fits(self) -> ModelConfig:
        if self.stride > self.max_length // 2:
            raise ValueError(f"stride ({self.stride}) must be at most half of max_length")
        return self


class TrainingConfig(_Section):
    """Optimisation: passed to transformers.TrainingArguments."""

    output_dir: Path = Path("models/default")
    epochs: float = Field(20, gt=0)
    batch_size: int = Field(8, ge=1)
    eval_batch_size: int = Field(16, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    learning_rate: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    # Fraction of all steps spent warming up the learning rate.
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    seed: int = 42
    # auto: bf16 autocast where the hardware supports it (CUDA or AVX-512 BF16 CPUs).
    bf16: Literal["auto"] | bool = "auto"
    # Stop when validation F1 has not improved for this many evaluations (None: never).
    early_stopping_patience: int | None = Field(None, ge=1)
    # Batches of similar length: less padding, faster steps.
    group_by_length: bool = True
    logging_steps: int = Field(10, ge=1)
    # Show progress bars.
    progress: bool = True


class Config(_Section):
    """One run: data -> model -> training."""

    name: str = "default"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()

    @model_validator(mode="after")
    def _refit_selects_nothing(self) -> Config:
        if self.data.split.refit and self.training.early_stopping_patience:
            raise ValueError(
                "data.split.refit keeps the last epoch (nothing is evaluated during training):"
                " leave training.early_stopping_patience unset"
            )
        return self

    def to_yaml(self) -> str:
        """The resolved configuration, as saved next to every output."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _apply_override(raw: dict[str, Any], assignment: str) -> None:
    key, sep, value = assignment.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {assignment!r} is not KEY=VALUE (e.g. training.epochs=3)")
    node = raw
    *parents, leaf = key.split(".")
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {assignment!r}: {part!r} is not a section")
        node = child
    node[leaf] = yaml.safe_load(value)


def _format_errors(error: ValidationError, source: str) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = "unknown key" if item["type"] == "extra_forbidden" else item["msg"]
        received = "" if item["type"] == "extra_forbidden" else f" (got {item.get('input')!r})"
        lines.append(f"  {key}: {message}{received}")
    return f"{source}: invalid configuration:\n" + "\n".join(lines)


def load_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (), ignore_unknown: bool = False
) -> Config:
    """Read, override and validate a YAML config; every problem is reported at once.

    ``ignore_unknown`` drops keys this version does not know, with a warning: for the
    ``training_config.yaml`` saved with a model by another version of the project.
    """
    raw: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
        raw = loaded or {}
    for assignment in overrides:
        _apply_override(raw, assignment)
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        unknown = [item["loc"] for item in exc.errors() if item["type"] == "extra_forbidden"]
        if not ignore_unknown or not unknown or len(unknown) < len(exc.errors()):
            raise ConfigError(_format_errors(exc, source)) from None
    for location in unknown:
        *parents, leaf = location
        node = raw
        for part in parents:
            node = node[part]
        del node[leaf]
    keys = ", ".join(".".join(str(part) for part in location) for location in unknown)
    warnings.warn(f"{source}: ignoring keys this version does not know: {keys}", stacklevel=2)
    return Config.model_validate(raw)  # the unknown keys were the only problems
