"""The OpenVINO backend of Tagger on a tiny model: fp32 parity, NNCF int8, cache, errors."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from tests.test_onnx_backend import TEXTS, WINDOWS, window_probabilities  # the same texts and windows
from training.errors import ModelError
from training.inference.onnx_backend import cache_paths
from training.inference.quantization import CALIBRATION_WINDOWS_FILE, calibrate, load_calibration_windows
from training.inference.tagger import DEFAULT_BATCH_SIZE, Tagger
from training.modeling.hardware import cpu_has_fast_bf16


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_tagger):
    """The tiny random-weight tagger saved with calibration windows, as ``train`` saves a model."""
    directory = tmp_path_factory.mktemp("tiny-model")
    tiny_tagger.model.save_pretrained(directory)
    tiny_tagger.tokenizer.save_pretrained(directory)
    windows = tiny_tagger.encode([text.split() for text in TEXTS * 4])
    calibrate(tiny_tagger.model, windows.input_ids, tiny_tagger.tokenizer.pad_token_id or 0, directory)
    return directory


def test_fp32_matches_pytorch(model_dir):
    reference = Tagger.load(model_dir, precision="fp32", **WINDOWS)
    tagger = Tagger.load(model_dir, backend="openvino", precision="fp32", **WINDOWS)
    assert tagger.backend == "openvino" and tagger.model.precision == "f32"
    assert tagger.batch_size == DEFAULT_BATCH_SIZE["openvino"]
    assert tagger.pad_multiple == 32, "few input shapes: OpenVINO caches kernels per shape"
    assert tagger.model.path == cache_paths(model_dir / "onnx")[None], "OpenVINO reads the cached ONNX graph"
    for ours, theirs in zip(window_probabilities(tagger), window_probabilities(reference), strict=True):
        np.testing.assert_allclose(ours, theirs, atol=1e-4)
    assert tagger(TEXTS) == reference(TEXTS)


def test_default_precision_is_bf16_only_where_the_cpu_has_it(model_dir):
    tagger = Tagger.load(model_dir, backend="openvino", **WINDOWS)
    assert tagger.model.precision == ("bf16" if cpu_has_fast_bf16() else "f32")
    reference = Tagger.load(model_dir, precision="fp32", **WINDOWS)
    for ours, theirs in zip(window_probabilities(tagger), window_probabilities(reference), strict=True):
        np.testing.assert_allclose(ours, theirs, atol=0.05)


def test_int8_is_quantized_once_cached_and_close_to_fp32(model_dir):
    int8 = Tagger.load(model_dir, backend="openvino", quantize="int8", **WINDOWS)
    target = cache_paths(model_dir / "onnx")["openvino-int8"]
    assert int8.model.path == target and target.with_suffix(".bin").is_file()
    text = target.read_text()
    assert "FakeQuantize" in text or "FakeConvert" in text, "NNCF inserted quantization"
    fp32 = Tagger.load(model_dir, precision="fp32", **WINDOWS)
    ours, theirs = window_probabilities(int8), window_probabilities(fp32)
    difference = max(float(np.abs(a - b).max()) for a, b in zip(ours, theirs, strict=True))
    assert 0.0 < difference < 0.1, difference
    agreement = np.mean(np.concatenate(ours).argmax(-1) == np.concatenate(theirs).argmax(-1))
    assert agreement >= 0.9, agreement

    quantized_at = target.stat().st_mtime_ns
    again = Tagger.load(model_dir, backend="openvino", quantize="int8", **WINDOWS)
    assert target.stat().st_mtime_ns == quantized_at, "a current cache is reused, not quantized again"
    assert again(TEXTS) == int8(TEXTS)


def test_changed_weights_remove_the_stale_int8_model(model_dir, tmp_path):
    Tagger.load(model_dir, backend="openvino", quantize="int8", **WINDOWS)
    changed = tmp_path / "changed"
    shutil.copytree(model_dir, changed)  # the cache travels with the copy
    stale = cache_paths(changed / "onnx")["openvino-int8"]
    assert stale.is_file()
    model = Tagger.load(changed, backend="torch").model
    with torch.no_grad():
        model.classifier.bias[0] += 5.0  # O becomes by far the likeliest tag
    model.save_pretrained(changed)

    Tagger.load(changed, backend="onnx", **WINDOWS)  # any backend's load checks the fingerprint
    assert not stale.exists() and not stale.with_suffix(".bin").exists()
    int8 = Tagger.load(changed, backend="openvino", quantize="int8", **WINDOWS)
    assert stale.is_file()
    assert all(not entities for entities in int8(TEXTS)), "the new weights are the ones quantized"


def test_int8_without_calibration_windows_says_how_to_get_them(model_dir, tmp_path):
    older = tmp_path / "older"
    shutil.copytree(model_dir, older, ignore=shutil.ignore_patterns("onnx", CALIBRATION_WINDOWS_FILE))
    with pytest.raises(ModelError, match=f"no {CALIBRATION_WINDOWS_FILE}.*python -m training calibrate"):
        Tagger.load(older, backend="openvino", quantize="int8", **WINDOWS)


def test_unreadable_calibration_windows_name_the_file(model_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken, ignore=shutil.ignore_patterns("onnx"))
    (broken / CALIBRATION_WINDOWS_FILE).write_text('{"format": 1, "input_ids": [[]]}')
    with pytest.raises(ModelError, match=f"{CALIBRATION_WINDOWS_FILE}: unreadable calibration windows"):
        load_calibration_windows(broken)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"quantize": "int4"}, "quantize='int4' is not supported by OpenVINO"),
        ({"precision": "bf16-weights"}, "precision='bf16-weights' with backend='openvino'"),
    ],
)
def test_bad_options_are_reported(model_dir, options, message):
    with pytest.raises(ModelError, match=message):
        Tagger.load(model_dir, backend="openvino", **options)


def test_int8_answers_do_not_depend_on_the_batch(model_dir):
    """Static activation scales (NNCF): a document tags the same alone or batched with others,
    unlike ONNX Runtime's dynamic int8, which scales activations per batch."""
    int8 = Tagger.load(model_dir, backend="openvino", quantize="int8", **WINDOWS)
    together = int8(TEXTS)
    assert [int8(text) for text in TEXTS] == together
