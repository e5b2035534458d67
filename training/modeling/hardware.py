"""What the hardware is good at: whether bf16 autocast pays off (training and inference)."""

from __future__ import annotations

from pathlib import Path

import torch


def bf16_supported() -> bool:
    """bf16 autocast pays off: a CUDA GPU with bf16, or a CPU with AVX-512 BF16 (or AMX)."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def fast_bf16(model: torch.nn.Module) -> bool:
    """Whether bf16 autocast pays off where ``model`` lives (bf16 GPUs, AVX-512 BF16 CPUs)."""
    device = next(model.parameters()).device
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and bf16_supported()
