"""What the hardware is good at: bf16 (training and inference) and the fastest inference setup.

The CPU's flags decide (``/proc/cpuinfo``): ``amx_bf16`` (Intel AMX tiles), ``avx512_bf16`` (bf16
dot products in AVX-512) and ``avx512_vnni`` (int8 dot products). Without the first two, bf16
is emulated and slower than fp32, so nothing should pick it there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

# The CPU flags that decide precision and backend, in the order benchmarks print them.
RELEVANT_CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The flags of the first CPU in ``cpuinfo`` (empty where the file is unreadable, e.g. macOS)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_model(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The CPU's model name (``lscpu``'s "Model name"), or ``"unknown"``."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return "unknown"
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return value.strip()
    return "unknown"


def cpu_has_fast_bf16(flags: frozenset[str] | None = None) -> bool:
    """bf16 runs in hardware on this CPU: AVX-512 BF16 or AMX."""
    flags = cpu_flags() if flags is None else flags
    return "avx512_bf16" in flags or "amx_bf16" in flags


def bf16_supported() -> bool:
    """bf16 autocast pays off: a CUDA GPU with bf16, or a CPU with AVX-512 BF16 (or AMX)."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return cpu_has_fast_bf16()


def fast_bf16(model: torch.nn.Module) -> bool:
    """Whether bf16 autocast pays off where ``model`` lives (bf16 GPUs, AVX-512 BF16 CPUs)."""
    device = next(model.parameters()).device
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and bf16_supported()


@dataclass(frozen=True)
class InferenceChoice:
    """What ``Tagger.load(..., backend="auto")`` runs on this host, and why."""

    backend: str  # "torch", "onnx" or "openvino"
    precision: str  # torch: "auto", "fp32" or "bf16" (autocast); openvino: "auto"; onnx: "fp32"
    quantize: str | None  # onnx, openvino: "int8" or None
    reason: str


def inference_choices(
    flags: frozenset[str] | None = None,
    *,
    cuda: bool | None = None,
    onnx_available: bool = True,
    openvino_available: bool = True,
) -> list[InferenceChoice]:
    """The setups ``backend="auto"`` tries on this host, fastest first, by a rule over its CPU flags.

    The rule follows ``benchmarks/inference.py`` on each kind of host measured (figures in
    README, "Speed"); each choice stayed within 0.5 F1 points of the fp32 model there:

    - a CUDA GPU: PyTorch, bf16 autocast where the GPU has bf16;
    - AMX (``amx_bf16``): PyTorch with bf16 autocast (4.0x the pipeline on a Xeon with AMX);
    - AVX-512 BF16 without AMX (AMD EPYC): OpenVINO int8 (NNCF), then ONNX Runtime int8;
    - neither (AVX2 only, or AVX-512 without BF16, where bf16 is emulated and slower than fp32):
      ONNX Runtime int8, which beats PyTorch fp32 there.

    A runtime that is not installed is left out; PyTorch closes every list (bf16 autocast where
    the CPU has it, fp32 elsewhere), so a setup that cannot load (no calibration windows, a
    read-only model directory) falls through to one that can.
    """
    flags = cpu_flags() if flags is None else flags
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if cuda:
        return [InferenceChoice("torch", "auto", None, "CUDA GPU: PyTorch (bf16 autocast where it has bf16)")]
    bf16 = cpu_has_fast_bf16(flags)
    if "amx_bf16" in flags:
        return [InferenceChoice("torch", "bf16", None, "CPU with AMX: PyTorch bf16 autocast")]
    choices = []
    if bf16 and openvino_available:
        reason = "CPU with AVX-512 BF16 without AMX: OpenVINO int8"
        choices.append(InferenceChoice("openvino", "auto", "int8", reason))
    if onnx_available:
        what = "AVX-512 BF16 without AMX" if bf16 else "no hardware bf16"
        choices.append(InferenceChoice("onnx", "fp32", "int8", f"CPU with {what}: ONNX Runtime int8"))
    if bf16:
        choices.append(InferenceChoice("torch", "bf16", None, "CPU with AVX-512 BF16: PyTorch bf16 autocast"))
    else:
        choices.append(InferenceChoice("torch", "fp32", None, "CPU without hardware bf16: PyTorch fp32"))
    return choices


def choose_inference(
    flags: frozenset[str] | None = None,
    *,
    cuda: bool | None = None,
    onnx_available: bool = True,
    openvino_available: bool = True,
) -> InferenceChoice:
    """The fastest setup that holds accuracy on this host (the first of ``inference_choices``)."""
    return inference_choices(
        flags, cuda=cuda, onnx_available=onnx_available, openvino_available=openvino_available
    )[0]
