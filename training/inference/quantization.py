"""int8 quantization of exported graphs, with activation ranges calibrated on training text.

ONNX Runtime's dynamic quantization gives every activation one scale per batch. The inputs of
a BERT-style encoder's feed-forward layers have a few outlier channels (absolute values 10-15x
the typical channel's), so one scale leaves the other channels a handful of int8 steps. On
the default MiniLM model that cost 0.45 strict-F1 points when every matrix product was
quantized, so the feed-forward down-projections used to stay fp32, which made int8 slow.

SmoothQuant (Xiao et al., 2023) moves the outliers into the weights instead: for a product
``X @ W`` with per-channel activation maxima ``a`` and weight row maxima ``w``, the scale
``s = a**alpha / w**(1 - alpha)`` gives ``(X / s) @ (diag(s) W)``, the same result whose
activation channels are now alike. The division is a ``Mul`` before the product; the weight
rows are rescaled once, offline. The maxima ``a`` are measured on training windows by
``collect_activation_ranges`` (``train`` does it for every model it saves, ``python -m training
calibrate`` adds them to older models) and saved beside the weights in
``activation_ranges.json``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from training.errors import ModelError
from training.files import write_atomically

ACTIVATION_RANGES_FILE = "activation_ranges.json"
# The calibration windows themselves (token ids): OpenVINO's int8 (NNCF) measures its own
# statistics on them (``training.inference.openvino_backend``).
CALIBRATION_WINDOWS_FILE = "calibration_windows.json"
RANGES_FORMAT = 1
# Measured on models/default (validation + test windows, KL divergence to fp32 logits):
# 0.5 (the paper's default) made things worse, 0.75-0.9 were best; 0.85 best of all.
SMOOTHING_ALPHA = 0.85
MIN_RANGE = 1e-5
# Windows spread over the training split. On models/default, ranges from 32, 128 and all 370
# training windows gave int8 graphs equally close to fp32 (KL 2.4, 2.4, 2.3 x 1e-3).
CALIBRATION_WINDOWS = 128

log = logging.getLogger(__name__)


def collect_activation_ranges(
    model, input_ids: Sequence[Sequence[int]], batch_size: int = 8, pad_token_id: int = 0
) -> dict[str, np.ndarray]:
    """Per-input-channel absolute maximum of every ``nn.Linear``'s input over real tokens.

    ``input_ids`` are windows (lists of token ids); padding never counts. Runs in fp32.
    """
    import torch

    linears = {name: module for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    ranges: dict[str, torch.Tensor] = {}
    real: torch.Tensor | None = None  # the current batch's token mask, read by the hooks

    def record(name):
        def hook(module, inputs):
            x = inputs[0].detach().float()
            x = x[real] if x.dim() == 3 else x
            peak = x.abs().amax(dim=0)  # every window has real tokens
            ranges[name] = peak if name not in ranges else torch.maximum(ranges[name], peak)

        return hook

    handles = [module.register_forward_pre_hook(record(name)) for name, module in linears.items()]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(input_ids), batch_size):
                batch = input_ids[start : start + batch_size]
                width = max(len(ids) for ids in batch)
                ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, tokens in enumerate(batch):
                    ids[row, : len(tokens)] = torch.tensor(tokens)
                    mask[row, : len(tokens)] = 1
                real = mask.bool().to(device)
                model(input_ids=ids.to(device), attention_mask=mask.to(device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return {name: value.cpu().numpy().astype(np.float32) for name, value in ranges.items()}


def calibrate(model, input_ids: Sequence[Sequence[int]], pad_token_id: int, model_dir: Path) -> Path:
    """Measure ``model``'s activation ranges on up to ``CALIBRATION_WINDOWS`` of ``input_ids``
    (windows of training text) and save them in ``model_dir``, with the windows themselves
    (``CALIBRATION_WINDOWS_FILE``); returns the ranges file."""
    if not input_ids:
        raise ModelError(f"{model_dir}: no windows to calibrate activation ranges on")
    windows = sample_windows(input_ids, CALIBRATION_WINDOWS)
    ranges = collect_activation_ranges(model, windows, pad_token_id=pad_token_id)
    path = Path(model_dir) / ACTIVATION_RANGES_FILE
    save_activation_ranges(ranges, path, windows=len(windows))
    payload = {
        "format": RANGES_FORMAT,
        "description": "token ids of the training windows the activation ranges were measured on",
        "input_ids": [[int(i) for i in window] for window in windows],
    }
    write_atomically(
        Path(model_dir) / CALIBRATION_WINDOWS_FILE,
        lambda tmp: tmp.write_text(json.dumps(payload) + "\n", encoding="utf-8"),
    )
    return path


def _read_calibration_file(path: Path, what: str, parse):
    """``parse(payload)`` of the calibration JSON at ``path`` (None when there is none); any
    malformation is a ModelError naming the file and the way to rewrite it."""
    if not path.is_file():
        return None
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        if payload.get("format") != RANGES_FORMAT:
            raise ValueError(f"format {payload.get('format')!r}, expected {RANGES_FORMAT}")
        return parse(payload)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelError(
            f"{path}: unreadable {what} ({exc}); delete it or run `python -m training calibrate`"
        ) from None


def load_calibration_windows(model_dir: Path) -> list[list[int]] | None:
    """The calibration windows saved beside the model (token ids), or None when it has none."""

    def parse(payload: dict) -> list[list[int]]:
        windows = [[int(i) for i in window] for window in payload["input_ids"]]
        if not windows or not all(windows):
            raise ValueError("no windows, or an empty one")
        return windows

    return _read_calibration_file(Path(model_dir) / CALIBRATION_WINDOWS_FILE, "calibration windows", parse)


def save_activation_ranges(ranges: dict[str, np.ndarray], path: Path, windows: int) -> None:
    """Write the ranges as JSON: one list of per-channel maxima per linear layer."""
    payload = {
        "format": RANGES_FORMAT,
        "description": "per-input-channel absolute maxima of each linear layer's input (int8 smoothing)",
        "windows": windows,
        "ranges": {name: [float(x) for x in values] for name, values in sorted(ranges.items())},
    }
    write_atomically(Path(path), lambda tmp: tmp.write_text(json.dumps(payload) + "\n", encoding="utf-8"))


def load_activation_ranges(model_dir: Path) -> dict[str, np.ndarray] | None:
    """The saved ranges of ``model_dir``, or None when it has none."""
    return _read_calibration_file(
        Path(model_dir) / ACTIVATION_RANGES_FILE,
        "activation ranges",
        lambda payload: {
            name: np.asarray(values, dtype=np.float32) for name, values in payload["ranges"].items()
        },
    )


def sample_windows(input_ids: Sequence[Sequence[int]], count: int) -> list[Sequence[int]]:
    """``count`` windows spread evenly over ``input_ids`` (all of them when there are fewer)."""
    if len(input_ids) <= count:
        return list(input_ids)
    return [input_ids[round(i * (len(input_ids) - 1) / (count - 1))] for i in range(count)]


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array, dtype=np.float32).tobytes()).hexdigest()


def smooth_graph(
    graph, model_dir: Path, ranges: dict[str, np.ndarray], alpha: float = SMOOTHING_ALPHA
) -> int:
    """Apply SmoothQuant scales to every MatMul of ``graph`` (an ``onnx.ModelProto``) whose
    weight is a calibrated linear layer's; returns how many were smoothed.

    Graph weights are matched to layers by value (the exported initializer is the layer's
    weight transposed), which does not depend on how an exporter names nodes.
    """
    from onnx import helper, numpy_helper
    from safetensors.numpy import load_file

    by_digest: dict[str, str] = {}
    for weights_file in sorted(Path(model_dir).glob("*.safetensors")):
        for key, tensor in load_file(str(weights_file)).items():
            layer = key.removesuffix(".weight")
            if key.endswith(".weight") and layer in ranges and tensor.ndim == 2:
                by_digest[_digest(tensor.T)] = layer
    initializers = {init.name: init for init in graph.graph.initializer}
    nodes, smoothed = [], 0
    for node in graph.graph.node:
        weight = (
            initializers.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) == 2 else None
        )
        w = numpy_helper.to_array(weight) if weight is not None else None
        layer = by_digest.get(_digest(w)) if w is not None else None
        if layer is not None:
            a = np.maximum(ranges[layer], MIN_RANGE)
            scale = (a**alpha / np.maximum(np.abs(w).max(axis=1), MIN_RANGE) ** (1 - alpha)).astype(
                np.float32
            )
            weight.CopyFrom(numpy_helper.from_array((w * scale[:, None]).astype(np.float32), weight.name))
            inverse = f"{node.name}/smooth_scale"
            graph.graph.initializer.append(numpy_helper.from_array((1 / scale).astype(np.float32), inverse))
            nodes.append(helper.make_node("Mul", [node.input[0], inverse], [f"{inverse}_out"], name=inverse))
            node.input[0] = f"{inverse}_out"
            smoothed += 1
        nodes.append(node)
    del graph.graph.node[:]
    graph.graph.node.extend(nodes)
    return smoothed


def feed_forward_down_projections(graph, config) -> list[str]:
    """The MatMul nodes whose weight maps the feed-forward width back to the hidden size."""
    shapes = {init.name: tuple(init.dims) for init in graph.graph.initializer}
    down = (getattr(config, "intermediate_size", 4 * config.hidden_size), config.hidden_size)
    return [
        node.name
        for node in graph.graph.node
        if node.op_type == "MatMul" and len(node.input) > 1 and shapes.get(node.input[1]) == down
    ]


def quantize_int8(source: Path, target: Path, model_dir: Path, config) -> dict:
    """Dynamic int8 quantization of ``source``'s weight matrices into ``target``.

    Per-channel int8 weights for every MatMul and the fused attention's projections;
    activations are quantized at run time; products of two activations stay fp32, and so
    does the embedding table (quantizing a lookup saves memory, not time, and cost accuracy).
    With calibrated activation ranges the products are smoothed first (see the module
    docstring); without them the feed-forward down-projections stay fp32. Returns how many
    products were smoothed and how many stay fp32.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(source))
    ranges = load_activation_ranges(model_dir)
    if ranges is not None:
        # The first layer's down-projection writes the residual stream's massive outlier
        # dimensions; alone it caused 40% of the remaining int8 error (KL to fp32 on
        # models/default: 3.5e-3 with it quantized, 2.3e-3 without) for 5% of the speed.
        smoothed, keep_fp32 = (
            smooth_graph(graph, model_dir, ranges),
            feed_forward_down_projections(graph, config)[:1],
        )
    else:
        smoothed, keep_fp32 = 0, feed_forward_down_projections(graph, config)
        log.warning(
            "%s has no %s: int8 keeps the feed-forward down-projections in fp32 (slower). "
            "`python -m training calibrate %s` measures them on the model's training data.",
            model_dir,
            ACTIVATION_RANGES_FILE,
            model_dir,
        )
    staged = target.with_name(target.name + ".smoothed")
    advice = _DropMessages("Please consider")  # the graph is already optimized
    logging.getLogger().addFilter(advice)
    try:
        onnx.save(graph, str(staged))
        quantize_dynamic(
            str(staged),
            str(target),
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul", "Attention"],
            nodes_to_exclude=keep_fp32,
            # Fused contrib ops (Attention, BiasGelu) defeat ONNX shape inference.
            extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    finally:
        logging.getLogger().removeFilter(advice)
        staged.unlink(missing_ok=True)
    return {"smoothed": smoothed, "fp32_matmuls": len(keep_fp32)}


class _DropMessages(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)
