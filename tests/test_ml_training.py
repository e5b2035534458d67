"""Training from Label Studio through the ML backend: jobs, promotion, a killed job, the trigger.

The integration tests run the real Label Studio server (``label_studio`` fixture) and real
training children on the tiny encoder: a job takes seconds.
"""

from __future__ import annotations

import json
import os
import signal
import time

import httpx
import pytest
import yaml

from training.labelstudio import client
from training.labelstudio.jobs import (
    JobManager,
    TrainingSettings,
    describe,
    should_promote,
    summarize_comparison,
)
from training.labelstudio.ml_backend import Predictor, activate, make_server, open_store
from training.labelstudio.predictions import model_version


def _config(tmp_path, encoder_dir, url: str | None = None, **training) -> str:
    """A training config on a Label Studio project with the tiny encoder (seconds per job)."""
    config = {
        "name": "tiny-ls",
        "data": {
            "label_studio": {"project": 1, **({"url": url} if url else {})},
            "split": {"train": 0.6, "validation": 0.2, "test": 0.2},
        },
        "model": {"name": str(encoder_dir), "case_markers": True, "max_length": 64, "stride": 16},
        "training": {
            "epochs": 4,
            "batch_size": 8,
            "learning_rate": 1e-3,
            "bf16": False,
            "progress": False,
            "logging_steps": 1,
            **training,
        },
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.fixture(scope="module")
def silent_model_dir(tmp_path_factory, tiny_model_dir):
    """The tiny model with its classifier pushed to ``O``: it finds no entity (F1 0), so any
    candidate is at least as good and the promotion path runs whatever the tiny training reaches."""
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    model = AutoModelForTokenClassification.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        model.classifier.bias[model.config.label2id["O"]] = 100.0
    directory = tmp_path_factory.mktemp("silent-model")
    model.save_pretrained(directory)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(directory)
    return directory


def _backend(tmp_path, model_dir, settings: TrainingSettings):
    store, version = open_store(model_dir, tmp_path / "store")
    from training.inference.tagger import Tagger

    predictor = Predictor(Tagger.load(store.path(version)), version)
    settings.check(store)
    jobs = JobManager(
        store, settings, serving=lambda: predictor.version, promote=lambda v: activate(store, predictor, v)
    )
    server = make_server(predictor, "127.0.0.1", 0, quiet=True, store=store, jobs=jobs)
    server.start()
    return server, store, predictor, jobs


def _wait_for(url: str, job_id: str, states: tuple[str, ...], timeout: float = 900) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = httpx.get(f"{url}/jobs/{job_id}").json()
        if job["state"] in states:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} never reached {states}: {job}")


def test_start_training_in_label_studio_trains_promotes_and_a_killed_job_changes_nothing(
    label_studio, silent_model_dir, tiny_encoder_dir, tiny_tasks, tmp_path, monkeypatch
):
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", label_studio.token)  # the children pull with it
    connection = label_studio.connection
    project = client.push_project(connection, "ml-training").id
    client.push_tasks(connection, project, tiny_tasks)
    settings = TrainingSettings(config=tmp_path / "train.yaml", url=label_studio.url, bootstrap=200)
    _config(tmp_path, tiny_encoder_dir, label_studio.url)
    server, store, predictor, jobs = _backend(tmp_path, silent_model_dir, settings)
    try:
        first = predictor.version
        assert _entities(server.url) == 0
        backend = client.connect_ml_backend(connection, project, server.url)

        # "Start Training" in the project's model settings: Label Studio posts START_TRAINING.
        connection.sdk.ml.train(id=backend)
        running = httpx.get(f"{server.url}/status").json()["training"]["running"]
        assert running is not None and running["project"] == project
        assert running["trigger"] == "Label Studio START_TRAINING"
        _still_answers(server.url, first)  # the server answers while the child trains
        job = _wait_for(server.url, running["id"], ("promoted", "kept", "failed"))
        assert job["state"] == "promoted", job["message"]
        comparison = job["comparison"]
        assert comparison["candidate"]["f1"] >= comparison["serving"]["f1"]
        for side in ("candidate", "serving"):
            assert comparison[side]["ci_low"] is None or comparison[side]["ci_low"] <= comparison[side]["f1"]
        assert job["epoch"] == job["epochs"] == 4
        second = job["candidate_version"]
        assert second != first and store.current() == second and store.versions() == [first, second]
        assert second.endswith(model_version(store.path(second)).rsplit("-", 1)[1])  # its weights
        assert httpx.get(f"{server.url}/health").json()["model_version"] == second
        assert (store.jobs_dir / job["id"] / "train.log").is_file()
        assert json.loads((store.jobs_dir / job["id"] / "job.json").read_text())["state"] == "promoted"

        # A new task, opened in Label Studio, is pre-annotated by the promoted version.
        text = "Seoul and Paris signed the accord in Kuala Lumpur on Monday."
        task = client.push_tasks(connection, project, [{"data": {"text": text, "doc_id": "new-1"}}]).task_ids[
            0
        ]
        opened = connection.sdk.tasks.get(id=task)
        versions = [
            (p if isinstance(p, dict) else p.model_dump())["model_version"] for p in opened.predictions
        ]
        assert versions == [second]

        # A training killed mid-run leaves the promoted version serving.
        connection.sdk.ml.train(id=backend)
        killed = httpx.get(f"{server.url}/status").json()["training"]["running"]
        deadline = time.monotonic() + 120
        while (killed["state"] != "training" or not killed["pid"]) and time.monotonic() < deadline:
            time.sleep(0.1)
            killed = httpx.get(f"{server.url}/jobs/{killed['id']}").json()
        os.kill(killed["pid"], signal.SIGKILL)
        failed = _wait_for(server.url, killed["id"], ("failed", "promoted", "kept", "cancelled"))
        assert failed["state"] == "failed" and "killed by signal 9" in failed["message"]
        assert store.current() == second and store.versions() == [first, second]
        _still_answers(server.url, second)

        # The previous version can be restored.
        restored = httpx.post(f"{server.url}/versions/{first}/restore", timeout=60)
        assert restored.json() == {"current": first} and store.current() == first
        _still_answers(server.url, first)
    finally:
        server.shutdown()
        for backend_id in client.ml_backend_ids(connection, project, server.url):
            client.disconnect_ml_backend(connection, backend_id)


def _entities(url: str) -> int:
    texts = ["Seoul and Paris signed the accord in Kuala Lumpur on Monday.", "NATO met in Brussels."]
    tasks = [{"id": n, "data": {"text": text}} for n, text in enumerate(texts)]
    answer = httpx.post(f"{url}/predict", json={"tasks": tasks}, timeout=60).json()
    return sum(len(p["result"]) for p in answer["results"])


def _still_answers(url: str, version: str) -> None:
    tasks = [{"id": 1, "data": {"text": "Seoul and Paris met in Brussels."}}]
    answer = httpx.post(f"{url}/predict", json={"tasks": tasks}, timeout=60).json()
    assert answer["results"][0]["model_version"] == version


def test_a_cancelled_or_failing_job_leaves_the_serving_model(tiny_model_dir, tiny_encoder_dir, tmp_path):
    # An unreachable Label Studio: the child retries its pull (seconds), then fails.
    _config(tmp_path, tiny_encoder_dir, "http://127.0.0.1:9")
    settings = TrainingSettings(config=tmp_path / "train.yaml")
    server, store, predictor, jobs = _backend(tmp_path, tiny_model_dir, settings)
    try:
        first = predictor.version
        started = httpx.post(f"{server.url}/webhook", json={"action": "START_TRAINING", "project": {"id": 3}})
        assert started.json()["status"] == "started"
        job_id = started.json()["job"]
        again = httpx.post(f"{server.url}/webhook", json={"action": "START_TRAINING", "project": 3}).json()
        assert again == {"status": f"queued: runs after job {job_id}", "job": job_id}
        job = _wait_for(server.url, job_id, ("training",))
        while not job["pid"]:
            job = httpx.get(f"{server.url}/jobs/{job_id}").json()
        cancelled = httpx.post(f"{server.url}/jobs/{job_id}/cancel").json()
        assert cancelled["id"] == job_id
        assert _wait_for(server.url, job_id, ("cancelled", "failed"))["state"] == "cancelled"
        # The queued run starts after it and fails on the unreachable server.
        queued = [j for j in httpx.get(f"{server.url}/jobs").json()["jobs"] if j["id"] != job_id]
        assert len(queued) == 1 and "queued while" in queued[0]["trigger"]
        failed = _wait_for(server.url, queued[0]["id"], ("failed", "promoted", "kept"), timeout=180)
        assert failed["state"] == "failed" and "train failed (exit code 2)" in failed["message"]
        assert "http://127.0.0.1:9" in failed["message"]
        assert store.current() == first and store.versions() == [first]
        _still_answers(server.url, first)
        assert httpx.get(f"{server.url}/jobs/nope").status_code == 404
    finally:
        server.shutdown()
    # A restarted server reads the job history.
    reopened = JobManager(store, settings, serving=lambda: first, promote=lambda v: None)
    assert {j.state for j in reopened.jobs()} == {"cancelled", "failed"}


def test_a_bad_training_config_is_refused_before_serving(tmp_path, tiny_model_dir):
    from training.errors import ConfigError

    store, _ = open_store(tiny_model_dir, tmp_path / "store")
    with pytest.raises(ConfigError, match="no such file"):
        TrainingSettings(config=tmp_path / "missing.yaml").check(store)
    (tmp_path / "file.yaml").write_text("data:\n  source: data/corpus.json\n")
    with pytest.raises(ConfigError, match="not both"):
        TrainingSettings(config=tmp_path / "file.yaml").check(store)
    (tmp_path / "ok.yaml").write_text("training:\n  epochs: 1\n")
    with pytest.raises(ConfigError, match="training.epochs"):
        TrainingSettings(config=tmp_path / "ok.yaml", overrides=("training.epochs=-1",)).check(store)


def test_annotation_events_start_one_job_after_n_events_and_a_quiet_period(tmp_path, tiny_model_dir):
    (tmp_path / "ok.yaml").write_text("training:\n  epochs: 1\n")
    store, version = open_store(tiny_model_dir, tmp_path / "store")
    settings = TrainingSettings(config=tmp_path / "ok.yaml", train_every=3, debounce_s=0.3)
    jobs = JobManager(store, settings, serving=lambda: version, promote=lambda v: None)
    started: list[tuple[int, str]] = []
    jobs.start = lambda project, trigger: started.append((project, trigger))  # record, don't train
    assert "1 of 3" in jobs.annotation_event(5)["status"]
    assert "2 of 3" in jobs.annotation_event(5)["status"]
    assert "1 of 3" in jobs.annotation_event(6)["status"]  # counted per project
    for _ in range(4):  # a burst: each event restarts the quiet period
        assert "training starts after 0.3 s" in jobs.annotation_event(5)["status"]
        time.sleep(0.1)
    assert started == []
    time.sleep(0.6)
    assert started == [(5, "6 annotation events")]
    assert jobs.status()["annotation_events"] == {"6": 1}
    untriggered = JobManager(
        store, TrainingSettings(config=tmp_path / "ok.yaml"), lambda: version, lambda v: None
    )
    assert "on request only" in untriggered.annotation_event(5)["status"]


def test_promotion_rule_reads_the_paired_comparison_of_evaluate(tiny_tagger, tiny_tasks, tmp_path):
    """A real ``evaluate`` comparison of two models on the same documents decides the promotion."""
    from training.config import DataConfig
    from training.data.dataset import build_from_config
    from training.evaluation.scores import compare, run_evaluation

    export = tmp_path / "export.json"
    export.write_text(json.dumps(tiny_tasks))
    dataset, _ = build_from_config(DataConfig(source=export, dataset_dir=tmp_path / "ds"), save=False)
    rows = list(dataset["train"])
    evaluation = run_evaluation(tiny_tagger, rows)
    candidate, serving = tmp_path / "candidate", tmp_path / "serving"
    payload = {"comparison": compare([(str(candidate), evaluation), (str(serving), evaluation)], 100, 0)}
    summary = summarize_comparison(payload, candidate, serving, "train")
    assert summary["difference"]["difference"] == 0 and summary["documents"] == len(rows)
    assert should_promote(summary, margin=0.0)  # not worse: promoted
    worse = {**summary, "difference": {**summary["difference"], "difference": -0.02}}
    assert not should_promote(worse, margin=0.0) and should_promote(worse, margin=0.05)
    assert f"on {len(rows)} train documents: candidate" in describe(summary)
    with pytest.raises(Exception, match="unexpected comparison order"):
        summarize_comparison(payload, serving, candidate, "train")


def test_label_studio_reports_annotations_to_the_backend_through_the_project_webhook(
    label_studio, tiny_model_dir, tmp_path
):
    (tmp_path / "ok.yaml").write_text("training:\n  epochs: 1\n")
    settings = TrainingSettings(config=tmp_path / "ok.yaml", train_every=100, debounce_s=60)
    server, store, predictor, jobs = _backend(tmp_path, tiny_model_dir, settings)
    connection = label_studio.connection
    project = client.push_project(connection, "ml-webhook").id
    hook = None
    try:
        hook = client.connect_training_webhook(connection, project, f"{server.url}/webhook")
        assert client.connect_training_webhook(connection, project, f"{server.url}/webhook") == hook  # once
        text = "Seoul and Paris met."
        task = client.push_tasks(connection, project, [{"data": {"text": text, "doc_id": "w1"}}]).task_ids[0]
        result = [
            {
                "from_name": "label",
                "to_name": "text",
                "type": "labels",
                "value": {"start": 0, "end": 5, "text": "Seoul", "labels": ["GPE"]},
            }
        ]
        annotation = connection.sdk.annotations.create(id=task, result=result)
        connection.sdk.annotations.update(id=annotation.id, result=result[:0])
        deadline = time.monotonic() + 30
        counted = {}
        while time.monotonic() < deadline and counted.get(str(project), 0) < 2:
            counted = httpx.get(f"{server.url}/status").json()["training"]["annotation_events"]
            time.sleep(0.2)
        assert counted == {str(project): 2}  # created, then updated
        assert httpx.get(f"{server.url}/status").json()["training"]["running"] is None  # 2 of 100
    finally:
        server.shutdown()
        if hook is not None:
            client.remove_webhook(connection, hook)
    assert connection.sdk.webhooks.list(project=project) == []
