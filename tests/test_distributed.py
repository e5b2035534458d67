"""Training under torchrun with 2 CPU processes (DDP, gloo) on a tiny model."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_overrides

from training.config import load_config
from training.train import train

ROOT = Path(__file__).parent.parent


def _overrides(tiny_encoder_dir, tiny_export_path, root: Path, batch_size: int) -> list[str]:
    return tiny_overrides(
        tiny_encoder_dir,
        tiny_export_path,
        root,
        training__batch_size=batch_size,
        training__eval_batch_size=3,  # 3 does not divide the windows: uneven shards
        training__group_by_length="false",
        training__learning_rate=0.001,
    )


def _final_eval_loss(model_dir: Path) -> float:
    log = json.loads((model_dir / "training_log.json").read_text())
    return [entry["eval_loss"] for entry in log if "eval_loss" in entry][-1]


def test_torchrun_two_processes_matches_one_process(tmp_path, tiny_encoder_dir, tiny_export_path):
    ddp_root, single_root = tmp_path / "ddp", tmp_path / "single"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command += ["-m", "training", "train", str(ROOT / "configs" / "tiny.yaml")]
    command += [x for o in _overrides(tiny_encoder_dir, tiny_export_path, ddp_root, 2) for x in ("--set", o)]
    # Its own session, so a hang is ended with every worker torchrun started.
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        _, stderr = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail("torchrun did not finish within 300 s")
    assert process.returncode == 0, stderr[-3000:]

    metrics = json.loads((ddp_root / "model" / "metrics.json").read_text())
    assert metrics["train"]["world_size"] == 2
    dataset_report = json.loads((ddp_root / "dataset" / "conversion_report.json").read_text())
    # Final evaluation covers every document exactly once.
    assert metrics["validation"]["documents"] == dataset_report["splits"]["validation"]
    assert metrics["test"]["documents"] == dataset_report["splits"]["test"]
    # Only rank 0 wrote: one model directory, no leftover work directory.
    assert sorted(p.name for p in ddp_root.iterdir()) == ["dataset", "model"]

    # The same global batch (2 x 2) in one process reaches the same place.
    train(
        load_config(
            ROOT / "configs" / "tiny.yaml", _overrides(tiny_encoder_dir, tiny_export_path, single_root, 4)
        )
    )
    single = json.loads((single_root / "model" / "metrics.json").read_text())
    assert single["train"]["world_size"] == 1
    assert _final_eval_loss(ddp_root / "model") == pytest.approx(
        _final_eval_loss(single_root / "model"), rel=0.01
    )
