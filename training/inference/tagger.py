"""``Tagger``: load a trained model and tag articles of any length.

    from training import Tagger
    tagger = Tagger.load("models/default")
    tagger("South Korea's ambassador Yeo Seung-Bae met ...")

Texts are split into words once, tokenized once into overlapping windows, batched across
documents in length order with dynamic padding, and merged back per word (each word read from
the window where it is most central). Entities carry character offsets into the input.

Backends: PyTorch (``inference_mode``; bf16 autocast where the hardware has fast bf16, see
``precision``), ONNX Runtime (``Tagger.load(DIR, backend="onnx", quantize="int8")``, the graph
exported once and cached beside the model by ``training.inference.onnx_backend``) and OpenVINO
(``backend="openvino"``, that graph compiled for the CPU, int8 by NNCF:
``training.inference.openvino_backend``). ``Tagger.load(DIR)`` (``backend="auto"``) picks the
fastest of them that holds accuracy on the host's CPU
(``training.modeling.hardware.inference_choices``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from training.errors import ModelError
from training.modeling.encoder import load_trained
from training.modeling.hardware import InferenceChoice, fast_bf16, inference_choices
from training.modeling.windows import Windows, encode_sized, owned_predictions
from training.text import (
    DECODINGS,
    BioConstraints,
    decode,
    line_starts,
    tags_to_word_ranges,
    tokenize_words,
    word_probabilities,
)

# The constructor's defaults: ``training.config.ModelConfig``'s (``load`` reads a model's own).
DEFAULT_MAX_LENGTH = 256
DEFAULT_STRIDE = 64
BACKENDS = ("auto", "torch", "onnx", "openvino")
# Windows per batch, measured on the 2-core CPU (benchmarks/inference.py): PyTorch is fastest
# at 16; ONNX Runtime at 2, where each layer's activations still fit in the L2 caches.
DEFAULT_BATCH_SIZE = {"torch": 16, "onnx": 2, "openvino": 8}
# Batches are padded to a multiple of this many tokens. OpenVINO compiles and caches kernels
# for every input shape it meets: with exact widths its memory grew past 1.5 GB per process
# over 15,000 short articles; widths in steps of 32 keep it near 400 MB and run faster
# (fewer compilations), measured in benchmarks/README.md ("Tagging archives").
PAD_MULTIPLE = {"torch": 1, "onnx": 1, "openvino": 32}
# bf16: autocast (fp32 weights, bf16 matrix products); bf16-weights: the weights cast to bf16 once.
PRECISIONS = ("auto", "fp32", "bf16", "bf16-weights")

logger = logging.getLogger(__name__)


def _importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class Entity:
    """One predicted entity: ``text == input[start:end]``; ``score`` is its mean tag probability."""

    label: str
    start: int
    end: int
    text: str
    score: float

    def to_dict(self) -> dict:
        return asdict(self)


def tagged_entities(
    text: str, word_spans: Sequence[Sequence[int]], tagged: Sequence[tuple[str, float]]
) -> list[Entity]:
    """The entities of decoded words (``(tag, probability)`` per word); score: mean tag probability."""
    entities = []
    for first, last, label in tags_to_word_ranges([tag for tag, _ in tagged]):
        start, end = word_spans[first][0], word_spans[last][1]
        score = sum(p for _, p in tagged[first : last + 1]) / (last - first + 1)
        entities.append(Entity(label, start, end, text[start:end], round(score, 4)))
    return entities


class Tagger:
    """Entity tagger over a token-classification model and its fast tokenizer."""

    def __init__(
        self,
        model,
        tokenizer,
        *,
        max_length: int = DEFAULT_MAX_LENGTH,
        stride: int = DEFAULT_STRIDE,
        batch_size: int | None = None,
        precision: str = "auto",
        threads: int | None = None,
        decoding: str = "viterbi",
        single_window: int = 0,
    ) -> None:
        """``model``: a ``transformers`` token-classification model or an ONNX classifier.

        ``batch_size``: windows per forward pass (default ``DEFAULT_BATCH_SIZE`` of the backend).
        ``precision``: ``auto`` runs PyTorch models under bf16 autocast where the hardware has
        fast bf16 (CUDA with bf16, CPUs with AVX-512 BF16/AMX) and in fp32 elsewhere; ``fp32``
        and ``bf16`` force one; ``bf16-weights`` casts the model's weights to bf16 in place
        (no per-call casts; only worth it where bf16 runs in hardware). ``threads`` sets
        PyTorch's (process-wide) intra-op threads.
        ``decoding``: ``viterbi`` (valid BIO sequences, no entity across a line break or made of
        punctuation only) or ``greedy`` (each word's most probable tag, for comparison).
        ``single_window``: a document of at most this many tokens is read in one window of its
        own length instead of ``max_length`` windows (0: off; at most the model's position
        embeddings). Off by default: past ``max_length`` the model reads positions it never
        saw in training (-0.65 span F1 on articles of <= 300 tokens in ``benchmarks/inference.py``).
        """
        if precision not in PRECISIONS:
            raise ModelError(f"precision={precision!r}: use one of {PRECISIONS}")
        if decoding not in DECODINGS:
            raise ModelError(f"decoding={decoding!r}: use one of {DECODINGS}")
        self.is_torch = isinstance(model, torch.nn.Module)
        self.model = model.eval() if self.is_torch else model
        if not self.is_torch and precision.startswith("bf16"):
            raise ModelError(
                f"precision={precision!r} needs the torch backend here; ONNX graphs run in fp32 or int8"
            )
        positions = getattr(model.config, "max_position_embeddings", None)
        if single_window and positions is not None and single_window > positions:
            raise ModelError(f"single_window={single_window}: the model reads at most {positions} tokens")
        if threads is not None and self.is_torch:
            torch.set_num_threads(threads)
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.stride = stride
        self.backend = "torch" if self.is_torch else getattr(model, "backend", "onnx")
        self.batch_size = batch_size or DEFAULT_BATCH_SIZE[self.backend]
        self.pad_multiple = PAD_MULTIPLE[self.backend]
        self.max_positions = positions
        self.single_window = single_window
        self.precision = precision
        self.bf16 = self.is_torch and (precision == "bf16" or (precision == "auto" and fast_bf16(model)))
        if self.is_torch and precision == "bf16-weights":
            self.model = self.model.to(torch.bfloat16)
        # What backend="auto" chose (None when the backend was named).
        self.choice: InferenceChoice | None = None
        self.id2label = {int(k): v for k, v in model.config.id2label.items()}
        self.decoding = decoding
        self.constraints = BioConstraints(self.labels)

    @classmethod
    def load(
        cls,
        model_dir: str | Path,
        allow_pickle: bool = False,
        *,
        backend: str | None = None,
        quantize: str | None = None,
        onnx_cache_dir: str | Path | None = None,
        **kwargs,
    ) -> Tagger:
        """A Tagger for a model directory written by ``python -m training train``.

        Window length and stride default to the ones the model was trained with. Pickled
        weights are refused unless ``allow_pickle`` (they can run code when loaded).

        ``backend``: ``"auto"`` (the default) takes backend, precision and quantization from
        ``inference_choices`` (the host's CPU flags; ``tagger.choice`` says what and why) and
        falls back to the next choice where one cannot load
        (a runtime not installed, a read-only model directory, an architecture the exporter
        cannot handle). Naming a ``precision`` without a backend means ``"torch"``.
        ``"torch"``: PyTorch (``precision``). ``"onnx"``: ONNX Runtime, the graph exported on
        first use and cached in ``<model_dir>/onnx/`` or ``onnx_cache_dir``; ``quantize="int8"``:
        dynamic int8 with SmoothQuant scales. ``"openvino"``: that graph compiled by OpenVINO
        (bf16 where the CPU has it; ``precision="fp32"`` forces fp32); ``quantize="int8"``:
        NNCF int8, calibrated on the training windows saved beside the model, cached there too.
        """
        if backend is None:
            if quantize is not None:
                raise ModelError(f"quantize={quantize!r} needs backend='onnx' or 'openvino'")
            backend = "torch" if "precision" in kwargs else "auto"
        if backend not in BACKENDS:
            raise ModelError(f"backend={backend!r}: use one of {BACKENDS}")
        if backend == "auto":
            return cls._load_auto(model_dir, allow_pickle, quantize, onnx_cache_dir, kwargs)
        if backend in ("onnx", "openvino"):
            from transformers import AutoTokenizer

            # Lazy: the export and both runtimes are optional extras ('.[onnx]', '.[openvino]').
            if backend == "onnx":
                from training.inference.onnx_backend import load_onnx_model

                model = load_onnx_model(
                    model_dir, quantize=quantize, threads=kwargs.get("threads"), cache_dir=onnx_cache_dir
                )
            else:
                from training.inference.openvino_backend import load_openvino_model

                model = load_openvino_model(
                    model_dir,
                    quantize=quantize,
                    threads=kwargs.get("threads"),
                    cache_dir=onnx_cache_dir,
                    precision=kwargs.pop("precision", "auto"),
                )
            tokenizer = AutoTokenizer.from_pretrained(model_dir)
        elif quantize is not None:
            raise ModelError(f"quantize={quantize!r} needs backend='onnx' or 'openvino'")
        else:
            model, tokenizer = load_trained(model_dir, allow_pickle=allow_pickle)
        saved = Path(model_dir) / "training_config.yaml"
        if saved.is_file():
            # Lazy: the config loader (pydantic) is needed only here, not by ``from training import Tagger``.
            from training.config import load_config

            model_section = load_config(saved, ignore_unknown=True).model
            kwargs.setdefault("max_length", model_section.max_length)
            kwargs.setdefault("stride", model_section.stride)
            kwargs.setdefault("decoding", model_section.decoding)
        return cls(model, tokenizer, **kwargs)

    @classmethod
    def _load_auto(cls, model_dir, allow_pickle: bool, quantize, onnx_cache_dir, kwargs: dict) -> Tagger:
        if quantize is not None or "precision" in kwargs:
            raise ModelError(
                "backend='auto' chooses precision and quantization itself; name a backend instead"
            )
        choices = inference_choices(
            onnx_available=_importable("onnxruntime"), openvino_available=_importable("openvino")
        )
        failures = []
        for choice in choices:
            options = {"precision": choice.precision} if choice.backend != "onnx" else {}
            try:
                tagger = cls.load(
                    model_dir,
                    allow_pickle,
                    backend=choice.backend,
                    quantize=choice.quantize,
                    onnx_cache_dir=onnx_cache_dir,
                    **options,
                    **kwargs,
                )
            except ModelError as exc:
                if choice is choices[-1]:
                    raise
                # e.g. a read-only model directory, no calibration windows for OpenVINO int8,
                # or an architecture the exporters cannot handle: the next choice.
                logger.warning("backend='auto': %s failed (%s); trying the next choice", choice.reason, exc)
                failures.append(f"{choice.backend}{' ' + choice.quantize if choice.quantize else ''}: {exc}")
                continue
            if failures:
                choice = replace(choice, reason=f"{choice.reason} (failed first: {'; '.join(failures)})")
            break
        tagger.choice = choice
        return tagger

    @property
    def labels(self) -> list[str]:
        """The model's BIO tags, in id order."""
        return [self.id2label[i] for i in range(len(self.id2label))]

    def encode(self, words: Sequence[Sequence[str]]) -> Windows:
        """The windows of pre-split documents."""
        return encode_sized(
            self.tokenizer,
            words,
            max_length=self.max_length,
            stride=self.stride,
            single_window=self.single_window,
        )

    @torch.inference_mode()
    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Float32 logits of one padded batch, from whichever backend runs the model."""
        if not self.is_torch:
            return self.model(input_ids, attention_mask)
        device = next(self.model.parameters()).device
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.bf16):
            out = self.model(
                input_ids=torch.from_numpy(input_ids).to(device),
                attention_mask=torch.from_numpy(attention_mask).to(device),
            ).logits
        return out.float().cpu().numpy()

    def window_probabilities(self, windows: Windows) -> list[np.ndarray]:
        """Softmax over tags for every token of every window (float32 arrays).

        Windows are sorted by length and cut into batches padded only to their own longest
        window (rounded up to the backend's ``PAD_MULTIPLE``), so short windows never pay for
        long ones. The softmax runs in numpy: small
        PyTorch ops right after an ONNX Runtime call contend with its spinning threads.
        """
        order = sorted(range(len(windows)), key=lambda i: len(windows.input_ids[i]))
        pad = self.tokenizer.pad_token_id or 0
        results: list[np.ndarray | None] = [None] * len(windows)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            width = len(windows.input_ids[batch[-1]])
            width = min(-(-width // self.pad_multiple) * self.pad_multiple, self.max_positions or width)
            ids = np.full((len(batch), width), pad, dtype=np.int64)
            mask = np.zeros((len(batch), width), dtype=np.int64)
            for row, i in enumerate(batch):
                tokens = windows.input_ids[i]
                ids[row, : len(tokens)] = tokens
                mask[row, : len(tokens)] = 1
            logits = self.logits(ids, mask)
            exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
            probabilities = exp / exp.sum(axis=-1, keepdims=True)
            for row, i in enumerate(batch):
                results[i] = probabilities[row, : len(windows.input_ids[i])]
        return results

    def word_probabilities(self, words: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """Per document, the words x tags probabilities (each word read from the window where
        it is most central)."""
        if not words:
            return []
        windows = self.encode(words)
        per_word = owned_predictions(windows, self.window_probabilities(windows), [len(w) for w in words])
        return [word_probabilities(rows, self.labels) for rows in per_word]

    def decode_words(
        self, probabilities: np.ndarray, words: Sequence[str], line_start: Sequence[bool] | None = None
    ) -> list[tuple[str, float]]:
        """One document's decoded BIO tags and their probabilities, with this tagger's decoding."""
        return decode(
            probabilities,
            self.labels,
            decoding=self.decoding,
            words=words,
            line_start=line_start,
            constraints=self.constraints,
        )

    def predict_words(
        self, words: Sequence[Sequence[str]], line_start: Sequence[Sequence[bool]] | None = None
    ) -> list[list[tuple[str, float]]]:
        """Per document, per word: the decoded BIO tag and its probability.

        ``line_start`` (per document, per word: a line break precedes it) keeps entities from
        crossing lines; without it only the BIO and punctuation rules apply.
        """
        return [
            self.decode_words(probabilities, doc_words, line_start[n] if line_start is not None else None)
            for n, (doc_words, probabilities) in enumerate(zip(words, self.word_probabilities(words)))
        ]

    def tag(self, texts: Sequence[str]) -> list[list[Entity]]:
        """Entities of each text in ``texts``."""
        return [entities for entities, _ in self.tag_with_confidence(texts)]

    def tag_with_confidence(self, texts: Sequence[str]) -> list[tuple[list[Entity], float]]:
        """Entities of each text and the model's confidence in the whole text.

        The confidence is the geometric mean over words of the chosen tag's probability
        (length-normalised log-likelihood, as in Shen et al. 2017): low values mark the texts
        whose annotation would teach the model most (``O`` words count too).
        """
        split = [tokenize_words(text) for text in texts]
        breaks = [line_starts(text, spans) for text, (_, spans) in zip(texts, split)]
        predictions = self.predict_words([words for words, _ in split], breaks)
        results = []
        for text, (_, spans), tagged in zip(texts, split, predictions):
            log_likelihood = sum(math.log(max(p, 1e-12)) for _, p in tagged)
            confidence = math.exp(log_likelihood / len(tagged)) if tagged else 1.0
            results.append((tagged_entities(text, spans, tagged), round(confidence, 6)))
        return results

    def __call__(self, texts: str | Sequence[str]) -> list[Entity] | list[list[Entity]]:
        """Entities of one text, or a list of entity lists for a batch of texts."""
        if isinstance(texts, str):
            return self.tag([texts])[0]
        return self.tag(list(texts))
