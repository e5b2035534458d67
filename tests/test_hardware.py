"""The host rule behind ``Tagger.load(backend="auto")`` (CPU flags mocked), bf16 weights, sized windows."""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest
import torch

from training.errors import ModelError
from training.inference.tagger import Tagger
from training.modeling import hardware
from training.modeling.hardware import (
    choose_inference,
    cpu_flags,
    cpu_has_fast_bf16,
    cpu_model,
    inference_choices,
)
from training.modeling.windows import encode_documents, encode_sized, token_counts

AVX2 = frozenset({"sse4_2", "avx", "avx2", "fma"})
AVX512_BF16 = AVX2 | {"avx512f", "avx512_vnni", "avx512_bf16"}
AMX = AVX512_BF16 | {"amx_tile", "amx_bf16", "amx_int8"}
TEXT = "Defence Minister Ahmad met Hanwha in Seoul. " * 3


def test_cpu_flags_and_model_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu avx2 avx512_bf16\n\n"
        "processor\t: 1\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu avx2 avx512_bf16\n"
    )
    assert cpu_flags(cpuinfo) == {"fpu", "avx2", "avx512_bf16"}
    assert cpu_model(cpuinfo) == "AMD EPYC 9R14"
    assert cpu_flags(tmp_path / "missing") == frozenset() and cpu_model(tmp_path / "missing") == "unknown"
    assert cpu_has_fast_bf16(cpu_flags(cpuinfo)) and not cpu_has_fast_bf16(AVX2)


@pytest.mark.parametrize(
    ("flags", "onnx", "openvino", "expected"),
    [
        (AMX, True, True, ("torch", "bf16", None)),
        (AVX512_BF16, True, True, ("openvino", "auto", "int8")),
        (AVX512_BF16, True, False, ("onnx", "fp32", "int8")),
        (AVX2, True, True, ("onnx", "fp32", "int8")),
        (AMX, False, False, ("torch", "bf16", None)),
        (AVX512_BF16, False, False, ("torch", "bf16", None)),
        (AVX2, False, True, ("torch", "fp32", None)),
    ],
)
def test_the_rule_never_picks_bf16_without_hardware_bf16(flags, onnx, openvino, expected):
    choice = choose_inference(flags, cuda=False, onnx_available=onnx, openvino_available=openvino)
    assert (choice.backend, choice.precision, choice.quantize) == expected
    assert choice.reason
    if not cpu_has_fast_bf16(flags):
        assert "bf16" not in choice.precision


def test_every_list_of_choices_ends_with_pytorch():
    choices = inference_choices(AVX512_BF16, cuda=False)
    expected = [("openvino", "int8"), ("onnx", "int8"), ("torch", None)]
    assert [(c.backend, c.quantize) for c in choices] == expected
    assert inference_choices(AVX2, cuda=False)[-1].precision == "fp32"


def test_a_cuda_gpu_runs_pytorch():
    assert choose_inference(AVX2, cuda=True).backend == "torch"


def _mock_host(monkeypatch, flags):
    monkeypatch.setattr(hardware, "cpu_flags", lambda cpuinfo="/proc/cpuinfo": flags)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_auto_is_the_default_and_loads_int8_onnx_on_an_avx2_host(tiny_model_dir, tmp_path, monkeypatch):
    _mock_host(monkeypatch, AVX2)
    tagger = Tagger.load(tiny_model_dir, onnx_cache_dir=tmp_path / "onnx")
    assert not tagger.is_torch and tagger.model.path.name == "model.int8.onnx"
    assert (tagger.choice.backend, tagger.choice.quantize) == ("onnx", "int8")
    assert tagger.single_window == 0, "windows stay the length the model was trained on"
    assert all(TEXT[e.start : e.end] == e.text for e in tagger(TEXT))
    assert Tagger.load(tiny_model_dir, precision="fp32").is_torch, "a named precision means PyTorch"


def test_auto_loads_openvino_int8_on_an_avx512_bf16_host(tiny_model_dir, tmp_path, monkeypatch):
    from training.inference.quantization import calibrate

    _mock_host(monkeypatch, AVX512_BF16)
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir, ignore=shutil.ignore_patterns("onnx"))
    reference = Tagger.load(model_dir, precision="fp32")
    calibrate(reference.model, reference.encode([TEXT.split()] * 4).input_ids, 0, model_dir)
    tagger = Tagger.load(model_dir)
    assert tagger.backend == "openvino" and tagger.model.path.name == "model.openvino-int8.xml"
    assert tagger.choice.reason == "CPU with AVX-512 BF16 without AMX: OpenVINO int8"


def test_auto_takes_the_next_choice_when_one_cannot_load(tiny_model_dir, tmp_path, monkeypatch):
    _mock_host(monkeypatch, AVX512_BF16)
    # No calibration windows (a model saved by an older version): OpenVINO int8 cannot load.
    tagger = Tagger.load(tiny_model_dir, onnx_cache_dir=tmp_path / "onnx")
    assert tagger.backend == "onnx" and tagger.model.path.name == "model.int8.onnx"
    assert "failed first: openvino int8:" in tagger.choice.reason and "calibrate" in tagger.choice.reason


def test_auto_loads_bf16_autocast_on_an_amx_host(tiny_model_dir, monkeypatch):
    _mock_host(monkeypatch, AMX)
    tagger = Tagger.load(tiny_model_dir, backend="auto")
    assert tagger.is_torch and tagger.bf16 and tagger.choice.precision == "bf16"


def test_auto_falls_back_to_fp32_pytorch_without_onnx_runtime(tiny_model_dir, monkeypatch):
    _mock_host(monkeypatch, AVX2)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails
    tagger = Tagger.load(tiny_model_dir, backend="auto")
    assert tagger.is_torch and not tagger.bf16 and tagger.choice.precision == "fp32"


def test_auto_falls_back_when_the_onnx_cache_cannot_be_written(tiny_model_dir, tmp_path, monkeypatch):
    _mock_host(monkeypatch, AVX2)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    tagger = Tagger.load(tiny_model_dir, backend="auto", onnx_cache_dir=blocker / "onnx")
    assert tagger.is_torch and "failed first: onnx int8:" in tagger.choice.reason


def test_auto_refuses_a_named_precision_or_quantization(tiny_model_dir):
    with pytest.raises(ModelError, match="backend='auto' chooses"):
        Tagger.load(tiny_model_dir, backend="auto", precision="fp32")
    with pytest.raises(ModelError, match="backend='auto' chooses"):
        Tagger.load(tiny_model_dir, backend="auto", quantize="int8")


def test_bf16_weights_are_cast_once_and_tag_like_fp32(tiny_model_dir):
    fp32 = Tagger.load(tiny_model_dir, precision="fp32")
    bf16 = Tagger.load(tiny_model_dir, precision="bf16-weights")
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    windows = fp32.encode([TEXT.split()])
    for ours, theirs in zip(
        bf16.window_probabilities(windows), fp32.window_probabilities(windows), strict=True
    ):
        assert ours.dtype == np.float32
        np.testing.assert_allclose(ours, theirs, atol=0.05)


def test_short_documents_get_one_window_of_their_own_length(tiny_tagger):
    tokenizer = tiny_tagger.tokenizer
    short, long = TEXT.split(), (TEXT * 12).split()
    counts = token_counts(tokenizer, [short, long])
    assert counts[0] < 100 < counts[1], counts
    sized = encode_sized(tokenizer, [long, short], max_length=32, stride=8, single_window=100)
    assert [len(ids) for ids, doc in zip(sized.input_ids, sized.doc_index) if doc == 1] == [counts[0]]
    assert sized.doc_index.count(0) == len(encode_documents(tokenizer, [long], max_length=32, stride=8))
    assert encode_sized(tokenizer, [short], max_length=32, stride=8, single_window=0).lengths() == (
        encode_documents(tokenizer, [short], max_length=32, stride=8).lengths()
    )
    one_window = Tagger(tiny_tagger.model, tokenizer, max_length=32, stride=8, single_window=100)
    wide = Tagger(tiny_tagger.model, tokenizer, max_length=100, stride=8)
    assert one_window([TEXT, TEXT * 12])[0] == wide(TEXT)
    assert one_window(TEXT * 12) == tiny_tagger(TEXT * 12)
    with pytest.raises(ModelError, match="single_window=4096"):
        Tagger(tiny_tagger.model, tokenizer, single_window=4096)
