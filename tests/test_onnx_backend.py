"""The ONNX Runtime backend of Tagger on a tiny model: export, fusion, checks, cache, int8."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
import torch

from training.errors import ModelError
from training.inference import onnx_backend
from training.inference.onnx_backend import FINGERPRINT_FILE, cache_paths
from training.inference.quantization import ACTIVATION_RANGES_FILE, feed_forward_down_projections
from training.inference.tagger import Tagger

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
    return tagger.window_probabilities(windows)


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
    model = Tagger.load(model_dir, backend="torch").model
    with torch.no_grad():
        model.classifier.bias[0] += 5.0  # O becomes by far the likeliest tag
    model.save_pretrained(changed)
    Tagger.load(model_dir, backend="torch").tokenizer.save_pretrained(changed)
    # The old cache travels with the copied directory, as when a model folder is overwritten.
    (changed / "onnx").mkdir()
    for path in (model_dir / "onnx").iterdir():
        (changed / "onnx" / path.name).write_bytes(path.read_bytes())

    reloaded = Tagger.load(changed, backend="onnx", **WINDOWS)
    reference = Tagger.load(changed, precision="fp32", **WINDOWS)
    for ours, theirs in zip(window_probabilities(reloaded), window_probabilities(reference), strict=True):
        np.testing.assert_allclose(ours, theirs, atol=1e-4)
    assert not cache_paths(changed / "onnx")["int8"].exists(), "stale int8 graph removed"


def test_fp32_graph_is_fused(model_dir):
    Tagger.load(model_dir, backend="onnx", **WINDOWS)
    operators = {node.op_type for node in onnx.load(str(cache_paths(model_dir / "onnx")[None])).graph.node}
    # ONNX Runtime's attention and GELU kernels, not Softmax/Erf subgraphs; LayerNorm unfused
    assert {"Attention", "BiasGelu", "LayerNormalization"} <= operators, operators
    assert not operators & {"Softmax", "Erf", "SkipLayerNormalization", "EmbedLayerNormalization"}, operators


def assert_int8_close_to_fp32(int8: Tagger, fp32: Tagger) -> None:
    ours, theirs = window_probabilities(int8), window_probabilities(fp32)
    difference = max(float(np.abs(a - b).max()) for a, b in zip(ours, theirs, strict=True))
    assert 0.0 < difference < 0.05, difference
    for entities in int8(TEXTS):
        for e in entities:
            assert e.label in {t[2:] for t in int8.labels if t != "O"}


def test_int8_without_activation_ranges_keeps_down_projections_fp32(model_dir):
    assert not (model_dir / ACTIVATION_RANGES_FILE).exists()
    fp32 = Tagger.load(model_dir, backend="onnx", **WINDOWS)
    int8 = Tagger.load(model_dir, backend="onnx", quantize="int8", **WINDOWS)
    assert int8.model.path == cache_paths(model_dir / "onnx")["int8"]
    graph = onnx.load(str(int8.model.path))
    operators = {node.op_type for node in graph.graph.node}
    assert operators & {"DynamicQuantizeMatMul", "MatMulInteger"}, operators
    assert "QAttention" in operators and "Gather" in operators, "attention quantized, embeddings not"
    # Without calibration, the feed-forward down-projections (outlier inputs) stay fp32.
    kept = feed_forward_down_projections(graph, int8.model.config)
    assert len(kept) == int8.model.config.num_hidden_layers
    assert not any(node.name.endswith("smooth_scale") for node in graph.graph.node)
    assert_int8_close_to_fp32(int8, fp32)


def test_int8_with_activation_ranges_is_smoothed(model_dir, tmp_path):
    from training.inference.quantization import calibrate

    calibrated = tmp_path / "calibrated"
    reference = Tagger.load(model_dir, precision="fp32", **WINDOWS)
    reference.model.save_pretrained(calibrated)
    reference.tokenizer.save_pretrained(calibrated)
    windows = reference.encode([text.split() for text in TEXTS])
    calibrate(reference.model, windows.input_ids, reference.tokenizer.pad_token_id, calibrated)
    before = Tagger.load(calibrated, backend="onnx", quantize="int8", **WINDOWS)
    (calibrated / "onnx" / "model.int8.onnx").unlink()

    int8 = Tagger.load(calibrated, backend="onnx", quantize="int8", **WINDOWS)
    graph = onnx.load(str(int8.model.path))
    config = int8.model.config
    smoothing = [node for node in graph.graph.node if node.name.endswith("smooth_scale")]
    # Every feed-forward and output projection and the classifier (the fused attention's
    # input projections are not plain MatMuls).
    assert len(smoothing) == 3 * config.num_hidden_layers + 1
    # Only the first layer's down-projection stays fp32.
    assert len(feed_forward_down_projections(graph, config)) == 1
    assert_int8_close_to_fp32(int8, Tagger.load(calibrated, backend="onnx", **WINDOWS))
    assert int8(TEXTS) == before(TEXTS), "rebuilt from the same ranges: same graph"


def test_smoothing_keeps_the_fp32_function(model_dir, tmp_path):
    """(X / s) @ (diag(s) W) == X @ W: smoothing alone must not change the logits."""
    import onnxruntime

    from training.inference.quantization import collect_activation_ranges, smooth_graph

    reference = Tagger.load(model_dir, precision="fp32", **WINDOWS)
    windows = reference.encode([text.split() for text in TEXTS])
    ranges = collect_activation_ranges(reference.model, windows.input_ids)
    # Exaggerate one channel so the scales are far from 1.
    for values in ranges.values():
        values[0] *= 50
    Tagger.load(model_dir, backend="onnx", **WINDOWS)
    graph = onnx.load(str(cache_paths(model_dir / "onnx")[None]))
    assert smooth_graph(graph, model_dir, ranges) > 0
    smoothed = tmp_path / "smoothed.onnx"
    onnx.save(graph, str(smoothed))
    plain = onnxruntime.InferenceSession(str(cache_paths(model_dir / "onnx")[None]))
    session = onnxruntime.InferenceSession(str(smoothed))
    ids = np.array([windows.input_ids[0]], dtype=np.int64)
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    np.testing.assert_allclose(session.run(None, feed)[0], plain.run(None, feed)[0], atol=1e-4)


def test_activation_ranges_ignore_padding(model_dir):
    from training.inference.quantization import collect_activation_ranges

    tagger = Tagger.load(model_dir, precision="fp32", **WINDOWS)
    windows = tagger.encode([text.split() for text in TEXTS]).input_ids
    batched = collect_activation_ranges(tagger.model, windows, batch_size=8, pad_token_id=3)
    one_by_one = collect_activation_ranges(tagger.model, windows, batch_size=1)
    linears = [name for name, m in tagger.model.named_modules() if isinstance(m, torch.nn.Linear)]
    assert sorted(batched) == sorted(one_by_one) == sorted(linears)
    for name in linears:
        np.testing.assert_allclose(batched[name], one_by_one[name], rtol=1e-5, atol=1e-6)
    classifier = tagger.model.classifier
    assert batched["classifier"].shape == (classifier.in_features,)


def test_exports_are_checked_against_pytorch(model_dir, tmp_path, monkeypatch):
    """A graph that computes something else is never cached; the next exporter is tried."""
    export_dynamo = onnx_backend._export_dynamo

    def broken(module, config, target):
        with torch.no_grad():
            module.inner.classifier.bias[0] += 1.0  # a graph of a different model
        try:
            export_dynamo(module, config, target)
        finally:
            with torch.no_grad():
                module.inner.classifier.bias[0] -= 1.0

    monkeypatch.setattr(onnx_backend, "_export_torchscript", broken)
    cache = tmp_path / "cache"
    tagger = Tagger.load(model_dir, backend="onnx", onnx_cache_dir=cache, **WINDOWS)
    reference = Tagger.load(model_dir, precision="fp32", **WINDOWS)
    assert tagger(TEXTS) == reference(TEXTS), "the dynamo export, checked, serves"

    monkeypatch.setattr(onnx_backend, "_export_dynamo", broken)
    with pytest.raises(ModelError, match=r"ONNX export failed \(torchscript: exported graph differs"):
        Tagger.load(model_dir, backend="onnx", onnx_cache_dir=tmp_path / "other", **WINDOWS)
    assert not cache_paths(tmp_path / "other")[None].exists()


def test_backends_have_their_own_batch_size(model_dir):
    from training.inference.tagger import DEFAULT_BATCH_SIZE

    assert Tagger.load(model_dir, backend="torch", **WINDOWS).batch_size == DEFAULT_BATCH_SIZE["torch"]
    assert Tagger.load(model_dir, backend="onnx", **WINDOWS).batch_size == DEFAULT_BATCH_SIZE["onnx"]
    assert Tagger.load(model_dir, backend="onnx", batch_size=7, **WINDOWS).batch_size == 7


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
        ({"quantize": "int8"}, "quantize='int8' needs backend='onnx' or 'openvino'"),
        ({"backend": "torch", "quantize": "int8"}, "quantize='int8' needs backend='onnx' or 'openvino'"),
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


def test_unreadable_activation_ranges_name_the_file(model_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken, ignore=shutil.ignore_patterns("onnx"))
    (broken / ACTIVATION_RANGES_FILE).write_text('{"format": 1, "ranges": [1, 2')
    with pytest.raises(ModelError, match=f"{ACTIVATION_RANGES_FILE}: unreadable activation ranges"):
        Tagger.load(broken, backend="onnx", quantize="int8", **WINDOWS)
