"""The Ray Data path on a local Ray with 2 CPUs: the same records as ``python -m training predict``."""

from __future__ import annotations

import json

import pytest
import ray
from conftest import write_archive

from training.cli import main
from training.errors import DataError
from training.inference.ray_data import tag_dataset


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def test_ray_data_writes_what_predict_writes(local_ray, tiny_model_dir, tmp_path):
    documents = write_archive(tmp_path / "in.jsonl", 25)
    with open(tmp_path / "in.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"id": "empty", "text": ""}) + "\n")  # a row without entities
    documents.append(("empty", ""))
    predicted = tmp_path / "predict.jsonl"
    # PyTorch on both sides: ONNX Runtime's dynamic int8 (auto on some CPUs) scales activations
    # per batch, and Ray's batches are not predict's.
    argv = ["predict", str(tiny_model_dir), str(tmp_path / "in.jsonl"), "--out", str(predicted)]
    assert main([*argv, "--backend", "torch"]) == 0
    expected = [json.loads(line) for line in predicted.read_text(encoding="utf-8").splitlines()]

    articles = ray.data.read_json(str(tmp_path / "in.jsonl"))
    torch_options = {"backend": "torch"}
    tagged = tag_dataset(
        articles, str(tiny_model_dir), options=torch_options, batch_size=4, concurrency=2, cpus_per_actor=0.5
    )
    tagged.write_json(str(tmp_path / "ray"))
    rows = [
        json.loads(line)
        for path in sorted((tmp_path / "ray").glob("*.json*"))
        for line in path.read_text(encoding="utf-8").splitlines()
    ]
    order = {doc_id: n for n, (doc_id, _) in enumerate(documents)}
    assert sorted(rows, key=lambda row: order[row["id"]]) == expected
    assert any(row["entities"] for row in expected) and any(not row["entities"] for row in expected)


def test_rows_without_ids_are_refused(local_ray, tiny_model_dir):
    articles = ray.data.from_items([{"text": "Seoul and Ankara."}])
    with pytest.raises(DataError, match="no 'id' column"):
        tag_dataset(articles, str(tiny_model_dir))
