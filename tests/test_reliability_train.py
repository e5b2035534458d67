"""Interrupted and failing runs: resume gives the same result, nothing good is ever lost."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path

import pytest
from conftest import tiny_overrides

from training.config import load_config
from training.errors import ModelError, TrainingError
from training.train import check_output_writable, train, work_dir_for

ROOT = Path(__file__).parent.parent


def _overrides(tiny_encoder_dir, tiny_export_path, root: Path) -> list[str]:
    return tiny_overrides(tiny_encoder_dir, tiny_export_path, root, training__epochs=4)


def _metrics(model_dir: Path) -> dict:
    return json.loads((model_dir / "metrics.json").read_text())


def _flat(tree, prefix=""):
    if isinstance(tree, dict):
        return {k: v for key, value in tree.items() for k, v in _flat(value, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): tree}


def _same_weights(a: Path, b: Path) -> bool:
    import torch
    from safetensors.torch import load_file

    left, right = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return left.keys() == right.keys() and all(torch.allclose(left[k], right[k], atol=1e-6) for k in left)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, tiny_encoder_dir, tiny_export_path):
    root = tmp_path_factory.mktemp("reference")
    config = load_config(ROOT / "configs" / "tiny.yaml", _overrides(tiny_encoder_dir, tiny_export_path, root))
    train(config)
    return root


def test_same_seed_same_metrics(reference_run, tmp_path, tiny_encoder_dir, tiny_export_path):
    config = load_config(
        ROOT / "configs" / "tiny.yaml", _overrides(tiny_encoder_dir, tiny_export_path, tmp_path)
    )
    train(config)
    first, second = _metrics(reference_run / "model"), _metrics(tmp_path / "model")
    for split in ("validation", "test"):
        assert _flat(second[split]) == pytest.approx(_flat(first[split]), abs=1e-6)
    assert second["train"]["loss"] == pytest.approx(first["train"]["loss"], rel=1e-5)
    assert _same_weights(reference_run / "model", tmp_path / "model")


def test_sigkill_mid_run_then_resume_matches_an_uninterrupted_run(
    reference_run, tmp_path, tiny_encoder_dir, tiny_export_path
):
    overrides = _overrides(tiny_encoder_dir, tiny_export_path, tmp_path)
    model_dir = tmp_path / "model"
    # A previous good model in the output dir must survive the killed run.
    shutil.copytree(reference_run / "model", model_dir)
    before = (model_dir / "model.safetensors").read_bytes()
    command = [sys.executable, "-m", "training", "train", str(ROOT / "configs" / "tiny.yaml")]
    command += [x for o in overrides for x in ("--set", o)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = work_dir_for(model_dir) / "checkpoints"
    deadline = time.monotonic() + 240
    while not any(checkpoints.glob("checkpoint-*/trainer_state.json")):
        assert process.poll() is None, "training ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint within 240 s"
        time.sleep(0.2)
    time.sleep(0.3)  # trainer_state.json is the checkpoint's last file: let it be written whole
    assert process.poll() is None, "training finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (model_dir / "model.safetensors").read_bytes() == before

    train(load_config(ROOT / "configs" / "tiny.yaml", overrides), resume=True)
    resumed, reference = _metrics(model_dir), _metrics(reference_run / "model")
    for split in ("validation", "test"):
        assert _flat(resumed[split]) == pytest.approx(_flat(reference[split]), abs=1e-6)
    assert _same_weights(reference_run / "model", model_dir)
    assert not work_dir_for(model_dir).exists()


def test_unwritable_output_location_fails_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(TrainingError, match="cannot create the output location"):
        check_output_writable(blocker / "sub" / "model")


def test_disk_full_fails_before_training(tmp_path, monkeypatch, tiny_encoder_dir):
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**9, 10**9, 1000))
    with pytest.raises(TrainingError, match="MB free"):
        check_output_writable(tmp_path / "model", str(tiny_encoder_dir))


def test_pickled_weights_are_refused_unless_allowed(tmp_path, reference_run):
    import torch
    from safetensors.torch import load_file

    from training.inference.tagger import Tagger

    pickled = tmp_path / "pickled"
    shutil.copytree(reference_run / "model", pickled)
    state = load_file(pickled / "model.safetensors")
    (pickled / "model.safetensors").unlink()
    torch.save(state, pickled / "pytorch_model.bin")
    with pytest.raises(ModelError, match="pickled checkpoints can run code"):
        Tagger.load(pickled)
    assert isinstance(Tagger.load(pickled, allow_pickle=True)("Seoul and Ankara."), list)


def test_unresolvable_model_says_how_to_provide_it(tmp_path):
    # huggingface_hub reads HF_HUB_OFFLINE at import time: check in a fresh process.
    config = tmp_path / "offline.yaml"
    config.write_text("model:\n  name: no-such-org/no-such-model-xyz\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "training",
            "train",
            str(config),
            "--set",
            f"training.output_dir={tmp_path / 'm'}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "cannot be loaded" in result.stderr and "set model.name to the local directory" in result.stderr
    assert "Traceback" not in result.stderr
