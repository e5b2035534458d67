"""The real CLI on a tiny random-weight encoder: train -> save -> load -> evaluate -> predict."""

import json
import os
import shutil

import numpy as np
import pytest
from conftest import tiny_overrides

from training.cli import main
from training.config import load_config
from training.evaluation.scores import worst_labels
from training.schema import BIO_TAGS


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_encoder_dir, tiny_export_path):
    root = tmp_path_factory.mktemp("run")
    overrides = tiny_overrides(tiny_encoder_dir, tiny_export_path, root)
    args = ["train", "configs/tiny.yaml"] + [x for o in overrides for x in ("--set", o)]
    assert main(args) == 0
    return root, overrides


def test_model_directory_contents(tiny_run):
    root, _ = tiny_run
    model_dir = root / "model"
    names = {p.name for p in model_dir.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "training_config.yaml",
        "metrics.json",
        "README.md",
        "training_log.json",
        "activation_ranges.json",
        "calibration_windows.json",
    } <= names
    assert not any(n.endswith((".bin", ".pt", ".pth")) for n in names)
    umask = os.umask(0)
    os.umask(umask)
    for path in model_dir.iterdir():
        if path.is_file():  # safetensors alone writes the weights 0600
            assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path
    config = json.loads((model_dir / "config.json").read_text())
    assert config["id2label"] == {str(i): tag for i, tag in enumerate(BIO_TAGS)}
    assert not (root / ".model.run").exists()
    assert load_config(model_dir / "training_config.yaml").model.max_length == 64


def test_metrics_have_validation_and_test_in_the_evaluation_format(tiny_run):
    root, _ = tiny_run
    metrics = json.loads((root / "model" / "metrics.json").read_text())
    for split in ("validation", "test"):
        sections = {"strict", "default", "spans", "muc", "confusion", "errors", "documents"}
        assert sections <= set(metrics[split])
        micro = metrics[split]["strict"]["micro"]
        assert 0.0 <= micro["ci_low"] <= micro["ci_high"] <= 1.0
        assert 0.0 <= metrics[split]["strict"]["micro"]["f1"] <= 1.0
    log = json.loads((root / "model" / "training_log.json").read_text())
    assert [entry["epoch"] for entry in log if "eval_f1" in entry] == [1.0, 2.0]
    # The Trainer's per-epoch F1 (document level, owned windows) is the same computation as the
    # final evaluation: the best epoch's score must equal the saved model's validation score.
    best = max(entry["eval_f1"] for entry in log if "eval_f1" in entry)
    # (Batch shapes differ, so near-tied logits of the random model may flip a word or two.)
    assert best == pytest.approx(metrics["validation"]["strict"]["micro"]["f1"], abs=0.005)
    card = (root / "model" / "README.md").read_text()
    assert "strict micro F1" in card and "sha256" in card and "Tagger.load" in card
    test_micro = metrics["test"]["strict"]["micro"]
    assert f"95% CI {test_micro['ci_low']:.2f}-{test_micro['ci_high']:.2f}" in card
    assert (
        "Known weaknesses (lowest F1 on test, labels the test documents contain): "
        + worst_labels(metrics["test"])[0][0]
        in card
    )


def test_loads_with_plain_transformers(tiny_run):
    from transformers import AutoModelForTokenClassification, pipeline

    model_dir = str(tiny_run[0] / "model")
    model = AutoModelForTokenClassification.from_pretrained(model_dir)
    assert model.config.id2label[1] == BIO_TAGS[1] and model.config.num_labels == 27
    ner = pipeline("token-classification", model=model_dir, aggregation_strategy="first")
    text = "Defence Minister Ahmad met Hanwha in Seoul."
    for entity in ner(text):
        assert entity["entity_group"] in {t[2:] for t in BIO_TAGS[1:]}
        assert text[entity["start"] : entity["end"]].strip()


def test_evaluate_writes_json_and_compares(tiny_run, tmp_path, tiny_export_path, capsys):
    root, overrides = tiny_run
    out = tmp_path / "scores.json"
    assert main(["evaluate", str(root / "model"), "--split", "test", "--json", str(out)]) == 0
    scores = json.loads(out.read_text())
    assert {"strict", "default", "spans", "muc", "bootstrap", "documents"} <= set(scores)
    metrics = json.loads((root / "model" / "metrics.json").read_text())
    assert scores["strict"]["micro"] == pytest.approx(metrics["test"]["strict"]["micro"])
    assert main(["evaluate", str(root / "model"), str(root / "model"), "--data", str(tiny_export_path)]) == 0
    assert "strict F1" in capsys.readouterr().out

    # Viterbi decoding (the default) never starts an entity with I-; --decoding greedy may.
    assert scores["invalid_i_starts"] == 0
    greedy = tmp_path / "greedy.json"
    args = ["evaluate", str(root / "model"), "--data", str(tiny_export_path), "--decoding", "greedy"]
    assert main([*args, "--json", str(greedy)]) == 0
    viterbi = tmp_path / "viterbi.json"
    assert main([*args[:-2], "--json", str(viterbi)]) == 0
    greedy_scores, viterbi_scores = json.loads(greedy.read_text()), json.loads(viterbi.read_text())
    assert viterbi_scores["invalid_i_starts"] == 0
    assert greedy_scores["invalid_i_starts"] > 0, "a barely trained model makes invalid starts"


def test_calibrate_and_evaluate_a_model_saved_by_another_version(tiny_run, tmp_path, capsys):
    """An older model folder: no activation ranges, a training config with a retired key."""
    from training.inference.quantization import (
        ACTIVATION_RANGES_FILE,
        CALIBRATION_WINDOWS_FILE,
        load_activation_ranges,
        load_calibration_windows,
    )

    root, _ = tiny_run
    model_dir = tmp_path / "old-model"
    shutil.copytree(root / "model", model_dir)
    saved = load_activation_ranges(model_dir)
    saved_windows = load_calibration_windows(model_dir)
    (model_dir / ACTIVATION_RANGES_FILE).unlink()
    (model_dir / CALIBRATION_WINDOWS_FILE).unlink()
    config = model_dir / "training_config.yaml"
    config.write_text(config.read_text().replace("training:\n", "training:\n  max_steps: null\n"))

    with pytest.warns(UserWarning, match="ignoring keys this version does not know: training.max_steps"):
        assert main(["calibrate", str(model_dir)]) == 0
    assert "activation ranges from" in capsys.readouterr().out
    recalibrated = load_activation_ranges(model_dir)
    assert sorted(recalibrated) == sorted(saved) and saved  # train calibrates on the same windows
    for name, values in saved.items():
        np.testing.assert_allclose(recalibrated[name], values, rtol=1e-5)
        assert (values > 0).any()
    assert load_calibration_windows(model_dir) == saved_windows and saved_windows  # same windows again
    with pytest.warns(UserWarning, match="training.max_steps"):
        assert main(["evaluate", str(model_dir), "--bootstrap", "0"]) == 0


def test_predict_writes_one_json_line_per_document(tiny_run, tmp_path, tiny_export_path):
    root, _ = tiny_run
    text_file = tmp_path / "article.txt"
    text_file.write_text("SEOUL: Defence Minister Ahmad met Hanwha.\n")
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text(json.dumps({"id": "x1", "text": "Ankara and Seoul."}) + "\n")
    out = tmp_path / "out.jsonl"
    assert (
        main(
            [
                "predict",
                str(root / "model"),
                str(text_file),
                str(jsonl),
                str(tiny_export_path),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    tasks = json.loads(tiny_export_path.read_text())
    assert [line["id"] for line in lines[:2]] == ["article", "x1"] and len(lines) == 2 + len(tasks)
    texts = {"article": text_file.read_text(), "x1": "Ankara and Seoul."}
    texts.update({t["data"]["doc_id"]: t["data"]["text"] for t in tasks})
    for line in lines:
        for e in line["entities"]:
            assert set(e) == {"label", "start", "end", "text", "score"}
            assert texts[line["id"]][e["start"] : e["end"]] == e["text"]


def test_a_failed_run_leaves_the_previous_model_intact(tiny_run, tmp_path):
    root, overrides = tiny_run
    before = (root / "model" / "model.safetensors").read_bytes()
    broken = tmp_path / "broken.json"
    broken.write_text("[{")
    args = ["train", "configs/tiny.yaml"] + [x for o in overrides for x in ("--set", o)]
    assert main(args + ["--set", f"data.source={broken}"]) == 2
    assert (root / "model" / "model.safetensors").read_bytes() == before


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "config file not found" in err and "Traceback" not in err


@pytest.mark.parametrize("n_documents", [1, 2, 5])
def test_a_small_project_builds_a_loadable_dataset_and_trains(
    n_documents, tmp_path, tiny_encoder_dir, tiny_tasks, capsys
):
    from datasets import load_from_disk

    export = tmp_path / "small.json"
    tasks = [{**task, "data": {k: v for k, v in task["data"].items() if k != "split"}} for task in tiny_tasks]
    export.write_text(json.dumps(tasks[:n_documents]), encoding="utf-8")
    overrides = tiny_overrides(tiny_encoder_dir, export, tmp_path, training__epochs=1)
    assert main(["train", "configs/tiny.yaml"] + [x for o in overrides for x in ("--set", o)]) == 0
    out = capsys.readouterr().out
    saved = load_from_disk(str(tmp_path / "dataset"))  # every saved split loads again
    assert sum(len(split) for split in saved.values()) == n_documents
    assert all(len(split) > 0 for split in saved.values())
    metrics = json.loads((tmp_path / "model" / "metrics.json").read_text())
    card = (tmp_path / "model" / "README.md").read_text()
    if n_documents >= 3:
        assert set(saved) == {"train", "validation", "test"}
        assert metrics["splits_used"] == {"model_selection": "validation", "final_scores": "test"}
    else:
        missing = {"validation", "test"} - set(saved)
        assert missing, "fewer than 3 documents cannot fill three splits"
        if "test" in missing:
            assert "no test documents" in out and "no test documents" in card
            assert metrics["splits_used"]["final_scores"] != "test"
        if "validation" in missing:
            assert "no validation documents" in out
            assert metrics["splits_used"]["model_selection"] == "train"
    assert "unreliable" in out and "unreliable" in card  # fewer than 10 scored documents
    supported = {label for label, leaf in metrics["test"]["strict"]["per_label"].items() if leaf["support"]}
    assert {label for label, _ in worst_labels(metrics["test"])} <= supported


def test_a_refit_evaluates_nothing_while_training_and_keeps_the_last_epoch(
    tmp_path, tiny_encoder_dir, tiny_export_path, capsys
):
    overrides = tiny_overrides(tiny_encoder_dir, tiny_export_path, tmp_path, training__epochs=2)
    overrides.append("data.split.refit=true")
    assert main(["train", "configs/tiny.yaml"] + [x for o in overrides for x in ("--set", o)]) == 0
    out = capsys.readouterr().out
    assert "refit: the validation documents are trained on" in out
    metrics = json.loads((tmp_path / "model" / "metrics.json").read_text())
    assert metrics["splits_used"] == {"model_selection": "train", "final_scores": "test"}
    log = json.loads((tmp_path / "model" / "training_log.json").read_text())
    assert [entry["epoch"] for entry in log if "train_runtime" in entry] == [2.0]
    assert not [entry for entry in log if "eval_f1" in entry]
    with pytest.raises(Exception, match="early_stopping_patience"):
        load_config(
            "configs/tiny.yaml", overrides=["data.split.refit=true", "training.early_stopping_patience=2"]
        )


def test_resume_skips_a_checkpoint_killed_while_saving(tmp_path):
    from training.train import last_complete_checkpoint

    assert last_complete_checkpoint(tmp_path / "none") is None
    for step in (18, 36):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    # Killed while saving step 54: the trainer had written config.json, not yet its state.
    (tmp_path / "checkpoint-54").mkdir()
    (tmp_path / "checkpoint-54" / "config.json").write_text("{}")
    (tmp_path / "checkpoint-x").mkdir()
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-36")
    assert (tmp_path / "checkpoint-54").exists(), "only removed when asked"
    assert last_complete_checkpoint(tmp_path, remove_incomplete=True) == str(tmp_path / "checkpoint-36")
    assert not (tmp_path / "checkpoint-54").exists() and (tmp_path / "checkpoint-18").exists()
