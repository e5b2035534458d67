"""The ONNX Runtime backend of Tagger on a tiny model: export, cache, invalidation, int8."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from training.errors import ModelError
from training.inference import Tagger
from training.onnx_backend import FINGERPRINT_FILE, cache_paths, feed_forward_down_projections

TEXTS = [
    "South Korea's ambassador Yeo Seung-Bae met Malaysia's Defence Ministry on Thursday.",
    " ".join(f"Hanwha{i} sold K9 howitzers to Poland for US$2.{i} billion." for i in range(12)),
    "Ankara",
]
WINDOWS = {"max_length": 32, "stride": 8}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_tagger):
    """A saved model directory (safetensors, tokenizer) of the tiny random-weight tagger."""
    directory = tmp_path_factory.mktemp("tiny-model")
    tiny_tagger.model.save_pretrained(directory)
    tiny_tagger.tokenizer.save_pretrained(directory)
    return directory


def window_probabilities(tagger: Tagger) -> list[np.ndarray]:
    windows = tagger.encode([text.split() for text in TEXTS])
    return [p.numpy() for p in tagger.window_probabilities(windows)]


def test_onnx_fp32_matches_pytorch_and_is_cached(model_dir):
    reference = Tagger.load(model_dir, precision="fp32", **WINDOWS)
    tagger = Tagger.load(model_dir, backend="onnx", **WINDOWS)
    graph = cache_paths(model_dir / "onnx")[None]
    assert tagger.model.path == graph and (model_dir / "onnx" / FINGERPRINT_FILE).is_file()
    assert len(reference.encode([TEXTS[1].split()])) > 2, "the long text needs several windows"
    for ours, theirs in zip(window_probabilities(tagger), window_probabilities(reference), strict=True):
        np.testing.assert_allclose(ours, theirs, atol=1e-4)
    assert tagger(TEXTS) == reference(TEXTS)

    exported_at = graph.stat().st_mtime_ns
    again = Tagger.load(model_dir, backend="onnx", **WINDOWS)
    assert graph.stat().st_mtime_ns == exported_at, "a current cache is reused, not exported again"
    assert again(TEXTS) == tagger(TEXTS)


def test_changed_weights_invalidate_the_cache(model_dir, tmp_path):
    Tagger.load(model_dir, backend="onnx", quantize="int8", **WINDOWS)
    changed = tmp_path / "changed"
    model = Tagger.load(model_dir).model
    with torch.no_grad():
        model.classifier.bias[0] += 5.0  # O becomes by far the likeliest tag
    model.save_pretrained(changed)
    Tagger.load(model_dir).tokenizer.save_pretrained(changed)
    # The old cache travels with the copied directory, as when a model folder is overwritten.
    (changed / "onnx").mkdir()
    for path in (model_dir / "onnx").iterdir():
        (changed / "onnx" / path.name).write_bytes(path.read_bytes())

    reloaded = Tagger.load(changed, backend="onnx", **WINDOWS)
    reference = Tagger.load(changed, precision="fp32", **WINDOWS)
    for ours, theirs in zip(window_probabilities(reloaded), window_probabilities(reference), strict=True):
        np.testing.assert_allclose(ours, theirs, atol=1e-4)
    assert not cache_paths(changed / "onnx")["int8"].exists(), "stale int8 graph removed"


def test_int8_is_quantized_and_close_to_fp32(model_dir):
    fp32 = Tagger.load(model_dir, backend="onnx", **WINDOWS)
    int8 = Tagger.load(model_dir, backend="onnx", quantize="int8", **WINDOWS)
    assert int8.model.path == cache_paths(model_dir / "onnx")["int8"]
    graph = onnx.load(str(int8.model.path))
    operators = {node.op_type for node in graph.graph.node}
    assert operators & {"DynamicQuantizeMatMul", "MatMulInteger"}, operators
    # Feed-forward down-projections stay fp32 MatMuls (outlier-carrying inputs).
    kept = feed_forward_down_projections(int8.model.path, int8.model.config)
    assert len(kept) == int8.model.config.num_hidden_layers

    ours, theirs = window_probabilities(int8), window_probabilities(fp32)
    difference = max(float(np.abs(a - b).max()) for a, b in zip(ours, theirs, strict=True))
    assert 0.0 < difference < 0.05, difference
    for entities in int8(TEXTS):
        for e in entities:
            assert e.label in {t[2:] for t in int8.labels if t != "O"}


def test_bf16_autocast_is_close_to_fp32(model_dir):
    fp32 = Tagger.load(model_dir, precision="fp32", **WINDOWS)
    bf16 = Tagger.load(model_dir, precision="bf16", **WINDOWS)
    assert bf16.bf16 and not fp32.bf16
    ours, theirs = window_probabilities(bf16), window_probabilities(fp32)
    difference = max(float(np.abs(a - b).max()) for a, b in zip(ours, theirs, strict=True))
    assert 0.0 < difference < 0.05, difference


@pytest.mark.parametrize(
    "options, message",
    [
        ({"quantize": "int8"}, "quantize='int8' needs backend='onnx'"),
        ({"backend": "tensorrt"}, "backend='tensorrt'"),
        ({"backend": "onnx", "quantize": "int4"}, "quantize='int4' is not supported"),
        ({"precision": "fp16"}, "precision='fp16'"),
        ({"backend": "onnx", "precision": "bf16"}, "precision='bf16' needs the torch backend"),
    ],
)
def test_bad_options_are_reported(model_dir, options, message):
    with pytest.raises(ModelError, match=message):
        Tagger.load(model_dir, **options)


def test_unusable_cache_dir_names_it(model_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ModelError, match="cannot create the ONNX cache.*onnx_cache_dir"):
        Tagger.load(model_dir, backend="onnx", onnx_cache_dir=blocker / "onnx")


def test_predict_verb_runs_the_int8_graph(model_dir, tmp_path):
    from training.cli import main

    article = tmp_path / "article.txt"
    article.write_text(TEXTS[1])
    out = tmp_path / "tags.jsonl"
    argv = ["predict", str(model_dir), str(article), "--out", str(out), "--backend", "onnx"]
    assert main([*argv, "--quantize", "int8"]) == 0
    (line,) = [json.loads(x) for x in out.read_text().splitlines()]
    expected = Tagger.load(model_dir, backend="onnx", quantize="int8")(TEXTS[1])
    assert line["entities"] and line["entities"] == [e.to_dict() for e in expected]
