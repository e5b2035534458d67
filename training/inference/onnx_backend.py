"""The ONNX Runtime backend of ``Tagger``: export once, cache beside the model, run.

    Tagger.load("models/default", backend="onnx")                  # fp32
    Tagger.load("models/default", backend="onnx", quantize="int8")  # dynamic int8 weights

The first load exports the model with ``torch.onnx`` (dynamic batch and sequence axes), fuses
attention and GELU with ONNX Runtime's transformer optimizer where it knows the architecture,
checks the graph against PyTorch, and, for ``int8``, quantizes it (``training.inference.quantization``:
dynamic int8 with SmoothQuant scales from the model's calibrated activation ranges). The files
go to ``<model_dir>/onnx/`` with a fingerprint of the weights, config and activation ranges
they came from: a retrained or replaced model is exported again instead of silently serving
the old graph.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from pathlib import Path

import torch

from training.errors import ModelError
from training.files import sha256_of_files, write_atomically
from training.inference.quantization import ACTIVATION_RANGES_FILE, CALIBRATION_WINDOWS_FILE, quantize_int8

CACHE_DIR_NAME = "onnx"
FINGERPRINT_FILE = "fingerprint.json"
# Bump when the export recipe changes, so caches written by older code are rebuilt.
RECIPE_VERSION = 4
OPSET = 18
QUANTIZATIONS = ("int8",)
# Architectures whose attention/LayerNorm/GELU patterns ONNX Runtime's optimizer knows.
OPTIMIZER_MODEL_TYPES = {"bert": "bert", "roberta": "bert", "distilbert": "bert", "xlm-roberta": "bert"}


def model_fingerprint(model_dir: Path) -> dict:
    """What the cached graphs were built from: weights, activation ranges, config, recipe."""
    files = sorted(model_dir.glob("*.safetensors")) + [model_dir / "config.json"]
    calibration = [model_dir / ACTIVATION_RANGES_FILE, model_dir / CALIBRATION_WINDOWS_FILE]
    files += [path for path in calibration if path.is_file()]
    return {
        "recipe": RECIPE_VERSION,
        "opset": OPSET,
        "files": {path.name: sha256_of_files([path]) for path in files},
    }


def cache_paths(cache_dir: Path) -> dict[str | None, Path]:
    """The graph file of each quantization (None: fp32), and OpenVINO's int8 model (``.xml``,
    its weights in the ``.bin`` beside it)."""
    return {
        None: cache_dir / "model.onnx",
        "int8": cache_dir / "model.int8.onnx",
        "openvino-int8": cache_dir / "model.openvino-int8.xml",
    }


def export_fp32(model_dir: Path, target: Path) -> str:
    """Export the token-classification model of ``model_dir`` to ``target`` (logits output).

    Prefers the TorchScript exporter, whose graphs ONNX Runtime's optimizer fuses into its
    attention and GELU kernels, and falls back to the dynamo exporter (unfused) where that
    fails. Either graph must reproduce PyTorch's logits on a padded batch before it is used.
    Returns the exporter used.
    """
    from transformers import AutoModelForTokenClassification

    # Eager attention: SDPA's export guards fully masked rows with IsNaN/Where nodes over
    # every attention matrix (31% of ONNX Runtime's time on MiniLM) and defeats fusion.
    model = AutoModelForTokenClassification.from_pretrained(
        model_dir, use_safetensors=True, attn_implementation="eager"
    ).eval()
    raw = target.with_name(target.name + ".raw")
    failures = []
    try:
        for name, exporter in (("torchscript", _export_torchscript), ("dynamo", _export_dynamo)):
            try:
                exporter(_LogitsOnly(model).eval(), model.config, raw)
                _optimize(raw, target, model.config, fuse=name == "torchscript")
                _check_against_pytorch(target, model)
                return name
            except Exception as exc:  # an exporter or optimizer failing on this architecture
                failures.append(f"{name}: {exc}")
    finally:
        raw.unlink(missing_ok=True)
    raise ModelError(f"{model_dir}: ONNX export failed ({'; '.join(failures)})")


class _LogitsOnly(torch.nn.Module):
    """``forward(input_ids, attention_mask) -> logits``: the graph's whole interface."""

    def __init__(self, inner) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, input_ids, attention_mask):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask).logits


def _example_batch(config, lengths=(16, 11)):
    """Random ids, right-padded: a mask with zeros keeps the exporters from dropping masking."""
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, config.vocab_size, (len(lengths), max(lengths)), generator=generator)
    attention_mask = torch.zeros_like(input_ids)
    for row, length in enumerate(lengths):
        attention_mask[row, :length] = 1
    return input_ids, attention_mask


@contextlib.contextmanager
def _quiet_exporter():
    """Silence the exporters' advice (e.g. "torchvision is not installed") for one export."""
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        exporter_log.setLevel(level)


def _export_torchscript(module, config, target: Path) -> None:
    with _quiet_exporter():
        torch.onnx.export(
            module,
            _example_batch(config),
            str(target),
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_axes={
                name: {0: "batch", 1: "sequence"} for name in ("input_ids", "attention_mask", "logits")
            },
            opset_version=OPSET,
            dynamo=False,
        )


def _export_dynamo(module, config, target: Path) -> None:
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    with _quiet_exporter():
        program = torch.onnx.export(
            module,
            _example_batch(config),
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_shapes={
                "input_ids": {0: batch, 1: sequence},
                "attention_mask": {0: batch, 1: sequence},
            },
            opset_version=OPSET,
            dynamo=True,
            verbose=False,
        )
    program.save(str(target))


def _optimize(source: Path, target: Path, config, fuse: bool) -> None:
    """Fuse attention and GELU offline where ONNX Runtime's optimizer knows the architecture."""
    kind = OPTIMIZER_MODEL_TYPES.get(config.model_type)
    if kind is None or not fuse:
        os.replace(source, target)
        return
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions(kind)
    # Its embedding fusion computes wrong logits for these graphs (checked: max error 3.8),
    # and SkipLayerNormalization ran 4.6x slower than Add + LayerNormalization on AVX-512.
    options.enable_embed_layer_norm = False
    options.enable_skip_layer_norm = False
    optimized = optimize_model(
        str(source),
        model_type=kind,
        num_heads=config.num_attention_heads,
        hidden_size=config.hidden_size,
        opt_level=1,
        optimization_options=options,
    )
    optimized.save_model_to_file(str(target))


def _check_against_pytorch(graph: Path, model, tolerance: float = 1e-3) -> None:
    """Raise unless the graph's logits match PyTorch's on real tokens of padded batches."""
    import numpy as np
    import onnxruntime

    session = onnxruntime.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    for lengths in ((16, 11), (37, 37, 5)):
        input_ids, attention_mask = _example_batch(model.config, lengths)
        with torch.inference_mode():
            expected = model(input_ids=input_ids, attention_mask=attention_mask).logits.numpy()
        actual = session.run(
            ["logits"], {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()}
        )[0]
        real = attention_mask.numpy().astype(bool)
        error = float(np.abs(actual - expected)[real].max())
        if not error <= tolerance:
            raise ModelError(
                f"exported graph differs from PyTorch by {error:.3g} on a padded batch {lengths}"
            )


def _read_fingerprint(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def prepare(model_dir: str | Path, quantize: str | None = None, cache_dir: str | Path | None = None) -> Path:
    """The ONNX graph for ``model_dir`` (exported and cached on first use, reused after).

    Stale files of every kind in ``cache_paths`` are removed here when the model changed, so
    other backends caching there (OpenVINO) call this first.
    """
    model_dir = Path(model_dir)
    if quantize not in (None, *QUANTIZATIONS):
        raise ModelError(f"quantize={quantize!r} is not supported; use one of {QUANTIZATIONS} or None")
    if not (model_dir / "config.json").is_file() or not any(model_dir.glob("*.safetensors")):
        raise ModelError(f"{model_dir}: not a model directory with config.json and safetensors weights")
    cache = Path(cache_dir) if cache_dir is not None else model_dir / CACHE_DIR_NAME
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelError(
            f"{cache}: cannot create the ONNX cache ({exc.strerror}); pass onnx_cache_dir= a writable folder"
        ) from None
    if not os.access(cache, os.W_OK):
        raise ModelError(f"{cache}: the ONNX cache is not writable; pass onnx_cache_dir= a writable folder")
    fingerprint = model_fingerprint(model_dir)
    stamp = cache / FINGERPRINT_FILE
    paths = cache_paths(cache)
    current = _read_fingerprint(stamp) == fingerprint
    if not current:
        # The model changed (or the cache is new): stale graphs must not be served.
        stamp.unlink(missing_ok=True)
        for path in paths.values():
            path.unlink(missing_ok=True)
            path.with_suffix(".bin").unlink(missing_ok=True)
    if not paths[None].is_file():
        write_atomically(paths[None], lambda tmp: export_fp32(model_dir, tmp))
    if quantize is not None and not paths[quantize].is_file():
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(model_dir)
        write_atomically(paths[quantize], lambda tmp: quantize_int8(paths[None], tmp, model_dir, config))
    if not current:
        write_atomically(stamp, lambda tmp: tmp.write_text(json.dumps(fingerprint, indent=1) + "\n"))
    return paths[quantize]


class OnnxTokenClassifier:
    """An ONNX Runtime session with the calling shape ``Tagger`` needs: ids, mask -> logits."""

    def __init__(self, path: str | Path, config, threads: int | None = None) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads is not None:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.path = Path(path)
        self.config = config
        self.session = onnxruntime.InferenceSession(
            str(path),
            options,
            providers=["CPUExecutionProvider"],
            # SkipLayerNormalization: 4.6x slower than the Add + LayerNormalization it replaces.
            disabled_optimizers=["SkipLayerNormFusion"],
        )

    def __call__(self, input_ids, attention_mask):
        """Logits (numpy, float32) for int64 numpy ``input_ids`` and ``attention_mask``."""
        return self.session.run(["logits"], {"input_ids": input_ids, "attention_mask": attention_mask})[0]


def load_onnx_model(
    model_dir: str | Path,
    quantize: str | None = None,
    threads: int | None = None,
    cache_dir: str | Path | None = None,
) -> OnnxTokenClassifier:
    """The cached (or freshly exported) ONNX graph of ``model_dir`` in an ONNX Runtime session."""
    from transformers import AutoConfig

    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise ModelError("backend='onnx' needs onnxruntime and onnx: pip install -e '.[onnx]'") from None
    path = prepare(model_dir, quantize=quantize, cache_dir=cache_dir)
    return OnnxTokenClassifier(path, AutoConfig.from_pretrained(model_dir), threads=threads)
