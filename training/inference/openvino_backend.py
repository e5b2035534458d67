"""The OpenVINO backend of ``Tagger``: the exported ONNX graph, compiled for the CPU by OpenVINO.

    Tagger.load("models/default", backend="openvino")                   # bf16 where the CPU has it
    Tagger.load("models/default", backend="openvino", quantize="int8")  # NNCF int8, calibrated

Without ``quantize`` OpenVINO compiles the fp32 graph that ``training.inference.onnx_backend``
exports and caches, and runs it at its own default inference precision: bf16 on CPUs with
AVX-512 BF16 or AMX, fp32 elsewhere (``precision="fp32"`` forces fp32). ``quantize="int8"`` is
NNCF's post-training quantization of that graph (its transformer preset: SmoothQuant, per-tensor
activation ranges, fast bias correction), calibrated on the training windows ``train`` saves
beside the model (``calibration_windows.json``; ``python -m training calibrate`` adds them to
older models). The int8 model is cached as ``model.openvino-int8.xml``/``.bin`` in the ONNX
cache, under the same fingerprint: a retrained model is quantized again.

OpenVINO and NNCF are optional (``pip install -e '.[openvino]'``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from training.errors import ModelError
from training.inference.onnx_backend import cache_paths, prepare
from training.inference.quantization import CALIBRATION_WINDOWS_FILE, load_calibration_windows

QUANTIZATIONS = ("int8",)
# OpenVINO's names for the precisions a caller may force ("auto": OpenVINO's default for the CPU).
PRECISION_HINTS = {"auto": None, "fp32": "f32", "bf16": "bf16"}


def _openvino():
    try:
        import openvino
    except ImportError:
        raise ModelError("backend='openvino' needs openvino: pip install -e '.[openvino]'") from None
    return openvino


def quantize_openvino_int8(onnx_path: Path, target: Path, model_dir: Path) -> None:
    """NNCF int8 of the fp32 graph ``onnx_path``, calibrated on ``model_dir``'s saved windows,
    written to ``target`` (``.xml``) and the ``.bin`` beside it; the ``.xml`` lands last."""
    openvino = _openvino()
    try:
        import nncf
    except ImportError:
        raise ModelError(
            "quantize='int8' with backend='openvino' needs nncf: pip install -e '.[openvino]'"
        ) from None
    windows = load_calibration_windows(model_dir)
    if windows is None:
        raise ModelError(
            f"{model_dir}: no {CALIBRATION_WINDOWS_FILE} to calibrate OpenVINO int8 on; "
            f"run `python -m training calibrate {model_dir}` (train writes it for new models)"
        )
    samples = []
    for window in windows:
        ids = np.asarray([window], dtype=np.int64)
        samples.append({"input_ids": ids, "attention_mask": np.ones_like(ids)})
    model = openvino.Core().read_model(str(onnx_path))
    quantized = nncf.quantize(
        model,
        nncf.Dataset(samples),
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(samples),
    )
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".openvino-") as tmp:
        staged = Path(tmp) / target.name
        openvino.save_model(quantized, str(staged), compress_to_fp16=False)
        os.replace(staged.with_suffix(".bin"), target.with_suffix(".bin"))
        os.replace(staged, target)


def prepare_openvino(
    model_dir: str | Path, quantize: str | None = None, cache_dir: str | Path | None = None
) -> Path:
    """The model file OpenVINO compiles for ``model_dir``: the cached fp32 ONNX graph, or the
    cached NNCF int8 model (quantized on first use)."""
    if quantize not in (None, *QUANTIZATIONS):
        raise ModelError(
            f"quantize={quantize!r} is not supported by OpenVINO; use one of {QUANTIZATIONS} or None"
        )
    graph = prepare(model_dir, quantize=None, cache_dir=cache_dir)
    if quantize is None:
        return graph
    target = cache_paths(graph.parent)["openvino-int8"]
    if not target.is_file():
        quantize_openvino_int8(graph, target, Path(model_dir))
    return target


class OpenVinoTokenClassifier:
    """A compiled OpenVINO model with the calling shape ``Tagger`` needs: ids, mask -> logits."""

    backend = "openvino"

    def __init__(self, path: str | Path, config, threads: int | None = None, precision: str = "auto") -> None:
        openvino = _openvino()
        if precision not in PRECISION_HINTS:
            raise ModelError(
                f"precision={precision!r} with backend='openvino': use one of {tuple(PRECISION_HINTS)}"
            )
        settings: dict = {"PERFORMANCE_HINT": "LATENCY"}
        if threads is not None:
            settings["INFERENCE_NUM_THREADS"] = threads
        if PRECISION_HINTS[precision] is not None:
            settings["INFERENCE_PRECISION_HINT"] = PRECISION_HINTS[precision]
        core = openvino.Core()
        self.compiled = core.compile_model(core.read_model(str(path)), "CPU", settings)
        self.output = self.compiled.output(0)
        self.path = Path(path)
        self.config = config
        # What OpenVINO runs the floating-point parts in on this CPU ("bf16" or "f32").
        self.precision = self.compiled.get_property("INFERENCE_PRECISION_HINT").to_string()

    def __call__(self, input_ids, attention_mask):
        """Logits (numpy, float32) for int64 numpy ``input_ids`` and ``attention_mask``."""
        out = self.compiled({"input_ids": input_ids, "attention_mask": attention_mask})[self.output]
        return np.asarray(out, dtype=np.float32)


def load_openvino_model(
    model_dir: str | Path,
    quantize: str | None = None,
    threads: int | None = None,
    cache_dir: str | Path | None = None,
    precision: str = "auto",
) -> OpenVinoTokenClassifier:
    """``model_dir`` compiled by OpenVINO (exported, and quantized, on first use; cached after)."""
    from transformers import AutoConfig

    _openvino()
    path = prepare_openvino(model_dir, quantize=quantize, cache_dir=cache_dir)
    return OpenVinoTokenClassifier(
        path, AutoConfig.from_pretrained(model_dir), threads=threads, precision=precision
    )
