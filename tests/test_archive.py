"""Tagging archives: ``python -m training predict`` streams, resumes after a kill, runs workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import write_archive

from training.cli import main
from training.errors import DataError
from training.inference.archive import TaggerSpec, tag_archive, tag_records, written_ids

ROOT = Path(__file__).parent.parent


def read_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_predict_streams_records_equal_to_the_tagger(tiny_model_dir, tmp_path):
    from training.inference.tagger import Tagger

    documents = write_archive(tmp_path / "in.jsonl", 30)
    out = tmp_path / "out.jsonl"
    argv = [
        "predict",
        str(tiny_model_dir),
        str(tmp_path / "in.jsonl"),
        "--out",
        str(out),
        "--chunk-size",
        "7",
        "--backend",
        "torch",  # ONNX Runtime's dynamic int8 (auto on some CPUs) scales activations per batch
    ]
    assert main(argv) == 0
    tagger = Tagger.load(tiny_model_dir, backend="torch")
    expected = tag_records(tagger, [i for i, _ in documents], [t for _, t in documents])
    assert read_records(out) == expected
    assert any(record["entities"] for record in expected), "a random head tags something"


def test_a_cut_off_last_line_is_dropped_and_done_ids_are_skipped(tiny_model_dir, tmp_path):
    documents = write_archive(tmp_path / "in.jsonl", 20)
    spec = TaggerSpec(str(tiny_model_dir), {"backend": "torch"})  # batch-independent answers
    full = tmp_path / "full.jsonl"
    tag_archive(documents, full, spec, chunk_size=6, progress=False)
    lines = full.read_text(encoding="utf-8").splitlines(keepends=True)
    partial = tmp_path / "partial.jsonl"
    partial.write_text("".join(lines[:9]) + lines[9][:25], encoding="utf-8")  # killed mid-line
    assert written_ids(partial) == {f"doc-{i}" for i in range(9)}
    result = tag_archive(documents, partial, spec, chunk_size=6, progress=False)
    assert (result.tagged, result.skipped) == (11, 9)
    assert partial.read_text(encoding="utf-8") == full.read_text(encoding="utf-8")
    again = tag_archive(documents, partial, spec, progress=False)
    assert (again.tagged, again.skipped) == (0, 20)


def test_a_killed_run_resumes_without_duplicates_or_gaps(tiny_model_dir, tmp_path):
    documents = write_archive(tmp_path / "in.jsonl", 600)
    out = tmp_path / "out.jsonl"
    command = [
        sys.executable, "-m", "training", "predict", str(tiny_model_dir), str(tmp_path / "in.jsonl"),
        "--out", str(out), "--chunk-size", "8", "--no-progress",
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (out.is_file() and out.stat().st_size > 0) and time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read().decode()
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    written = len(out.read_text(encoding="utf-8").splitlines())
    assert 0 < written < len(documents), f"the kill must land mid-run ({written} lines written)"

    resumed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "already there, skipped" in resumed.stdout
    assert [r["id"] for r in read_records(out)] == [doc_id for doc_id, _ in documents]


def test_workers_write_the_same_records_in_input_order(tiny_model_dir, tmp_path):
    documents = write_archive(tmp_path / "in.jsonl", 12)
    spec = TaggerSpec(str(tiny_model_dir))
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    tag_archive(documents, one, spec, chunk_size=3, progress=False)
    result = tag_archive(documents, two, spec, workers=2, chunk_size=3, progress=False)
    assert result.tagged == 12
    assert read_records(two) == read_records(one)


def test_repeated_ids_and_foreign_outputs_are_refused(tiny_model_dir, tmp_path, capsys):
    spec = TaggerSpec(str(tiny_model_dir))
    with pytest.raises(DataError, match="'a' appears twice"):
        tag_archive(
            [("a", "Seoul."), ("b", "Ankara."), ("a", "Oslo.")], tmp_path / "o.jsonl", spec, progress=False
        )
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_text('{"id": "a", "entities": []}\nnot json\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"foreign.jsonl: line 2 is not JSON"):
        tag_archive([("a", "Seoul.")], foreign, spec, progress=False)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "text": "Seoul."}\n{"title": "no text"}\n', encoding="utf-8")
    code = main(["predict", str(tiny_model_dir), str(bad), "--out", str(tmp_path / "x.jsonl")])
    assert code == 2
    assert "bad.jsonl: line 2: no string 'text' field" in capsys.readouterr().err


def test_workers_that_cannot_load_the_model_name_it(tmp_path):
    from training.errors import ModelError

    spec = TaggerSpec(str(tmp_path / "not-a-model"))
    with pytest.raises(ModelError, match="not-a-model: a tagging worker could not load"):
        tag_archive([("a", "Seoul.")], tmp_path / "o.jsonl", spec, workers=2, progress=False)
