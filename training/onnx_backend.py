"""The ONNX Runtime backend of ``Tagger``: export once, cache beside the model, run.

    Tagger.load("models/default", backend="onnx")                  # fp32
    Tagger.load("models/default", backend="onnx", quantize="int8")  # dynamic int8 weights

The first load exports the model with ``torch.onnx`` (dynamic batch and sequence axes), fuses
it with ONNX Runtime's transformer optimizer where the architecture is supported, and, for
``int8``, quantizes the weight matrices dynamically. The files go to ``<model_dir>/onnx/``
with a fingerprint of the weights and config they came from: a retrained or replaced model
is exported again instead of silently serving the old graph.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
from pathlib import Path

from training.errors import ModelError
from training.files import sha256_of_files

CACHE_DIR_NAME = "onnx"
FINGERPRINT_FILE = "fingerprint.json"
# Bump when the export recipe changes, so caches written by older code are rebuilt.
RECIPE_VERSION = 3
OPSET = 18
QUANTIZATIONS = ("int8",)
# Architectures whose attention/LayerNorm/GELU patterns ONNX Runtime's optimizer knows.
OPTIMIZER_MODEL_TYPES = {"bert": "bert", "roberta": "bert", "distilbert": "bert", "xlm-roberta": "bert"}


def model_fingerprint(model_dir: Path) -> dict:
    """What the cached graphs were built from: the weights, the config and the recipe."""
    files = sorted(model_dir.glob("*.safetensors")) + [model_dir / "config.json"]
    return {
        "recipe": RECIPE_VERSION,
        "opset": OPSET,
        "files": {path.name: sha256_of_files([path]) for path in files},
    }


def cache_paths(cache_dir: Path) -> dict[str | None, Path]:
    """The graph file of each quantization (None: fp32)."""
    return {None: cache_dir / "model.onnx", "int8": cache_dir / "model.int8.onnx"}


def _replace_atomically(target: Path, write) -> None:
    """``write(tmp)`` then move it onto ``target``: readers never see a half-written graph."""
    handle, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(handle)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates files readable by their owner only
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)


def export_fp32(model_dir: Path, target: Path) -> None:
    """Export the token-classification model of ``model_dir`` to ``target`` (logits output)."""
    import torch
    from transformers import AutoModelForTokenClassification

    # Eager attention: the SDPA export guards fully masked rows with IsNaN/Where nodes over
    # every attention matrix, which took 31% of ONNX Runtime's time on MiniLM.
    model = AutoModelForTokenClassification.from_pretrained(
        model_dir, use_safetensors=True, attn_implementation="eager"
    ).eval()

    class LogitsOnly(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).logits

    # Example sizes above 1 so neither axis is specialised to a constant.
    input_ids = torch.randint(5, model.config.vocab_size, (2, 16))
    attention_mask = torch.ones_like(input_ids)
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)  # e.g. "torchvision is not installed"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                LogitsOnly(model),
                (input_ids, attention_mask),
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
    finally:
        exporter_log.setLevel(level)
    raw = target.with_name(target.name + ".raw")
    try:
        program.save(str(raw))
        _optimize(raw, target, model.config)
    finally:
        raw.unlink(missing_ok=True)


def _optimize(source: Path, target: Path, config) -> None:
    """Fuse transformer patterns offline where ONNX Runtime knows the architecture."""
    kind = OPTIMIZER_MODEL_TYPES.get(config.model_type)
    if kind is None:
        os.replace(source, target)
        return
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(
        str(source),
        model_type=kind,
        num_heads=config.num_attention_heads,
        hidden_size=config.hidden_size,
        opt_level=1,
    )
    optimized.save_model_to_file(str(target))


def feed_forward_down_projections(graph_path: Path, config) -> list[str]:
    """The MatMul nodes whose weight maps the feed-forward width back to the hidden size."""
    import onnx

    graph = onnx.load(str(graph_path), load_external_data=False).graph
    shapes = {init.name: tuple(init.dims) for init in graph.initializer}
    down = (getattr(config, "intermediate_size", 4 * config.hidden_size), config.hidden_size)
    return [
        node.name
        for node in graph.node
        if node.op_type == "MatMul" and len(node.input) > 1 and shapes.get(node.input[1]) == down
    ]


def quantize_int8(source: Path, target: Path, config) -> None:
    """Dynamic int8 quantization of the weight matrices (activations quantized at run time).

    Per-channel weight scales; products of two activations (attention) stay fp32, and so do
    the feed-forward down-projections: their inputs (GELU outputs) carry the outliers that
    per-tensor activation scales clip (Bondarenko et al. 2021). On the default MiniLM model
    quantizing those too cost 0.45 strict-F1 points on the test split; keeping them, 0.18.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The exported graph is already optimized; silence the generic pre-processing advice.
    advice = _DropMessages("Please consider")
    logging.getLogger().addFilter(advice)
    try:
        quantize_dynamic(
            str(source),
            str(target),
            weight_type=QuantType.QInt8,
            per_channel=True,
            nodes_to_exclude=feed_forward_down_projections(source, config),
            extra_options={"MatMulConstBOnly": True},
        )
    finally:
        logging.getLogger().removeFilter(advice)


class _DropMessages(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def _read_fingerprint(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def prepare(model_dir: str | Path, quantize: str | None = None, cache_dir: str | Path | None = None) -> Path:
    """The ONNX graph for ``model_dir`` (exported and cached on first use, reused after)."""
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
    if not paths[None].is_file():
        _replace_atomically(paths[None], lambda tmp: export_fp32(model_dir, tmp))
    if quantize is not None and not paths[quantize].is_file():
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(model_dir)
        _replace_atomically(paths[quantize], lambda tmp: quantize_int8(paths[None], tmp, config))
    if not current:
        _replace_atomically(stamp, lambda tmp: tmp.write_text(json.dumps(fingerprint, indent=1) + "\n"))
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
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

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
