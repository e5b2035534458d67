"""The ML backend: the protocol over HTTP, and a prediction fetched through a real Label Studio."""

from __future__ import annotations

import httpx
import pytest

from training.labelstudio import client
from training.labelstudio.ml_backend import Predictor, load_predictor, make_server
from training.labelstudio.predictions import model_version
from training.schema import LABEL_NAMES, labeling_config_xml


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    """The tiny model served on a free port of 127.0.0.1 for this module."""
    predictor = load_predictor(tiny_model_dir)
    server = make_server(predictor, "127.0.0.1", 0, quiet=True)
    server.start()
    yield server.url, predictor
    server.shutdown()


def test_health_setup_and_versions_name_the_model_version(backend, tiny_model_dir):
    url, predictor = backend
    assert predictor.version == model_version(tiny_model_dir)
    health = httpx.get(f"{url}/health").json()
    assert health["status"] == "UP" and health["model_version"] == predictor.version
    setup = httpx.post(f"{url}/setup", json={"project": "1.0", "schema": "<View/>", "access_token": "x"})
    assert setup.json() == {"model_version": predictor.version}
    assert httpx.get(f"{url}/versions").json() == {
        "current": predictor.version,
        "versions": [predictor.version],
    }


def test_predict_answers_one_scored_prediction_per_task(backend):
    url, predictor = backend
    texts = ["South Korea's ambassador met Malaysia's Defence Ministry.", "Paris \U0001f600 and Seoul."]
    tasks = [{"id": n, "data": {"text": text}} for n, text in enumerate(texts)]
    answer = httpx.post(f"{url}/predict", json={"tasks": tasks, "label_config": None}, timeout=60).json()
    assert len(answer["results"]) == 2
    for prediction in answer["results"]:
        assert prediction["model_version"] == predictor.version and 0 < prediction["score"] <= 1
        for result in prediction["result"]:
            assert result["from_name"] == "label" and result["to_name"] == "text"
            assert result["value"]["labels"][0] in LABEL_NAMES


def test_predict_uses_the_names_of_the_projects_labeling_config(backend):
    url, _ = backend
    config = labeling_config_xml(from_name="ner", to_name="body", text_field="article")
    tasks = [{"id": 1, "data": {"article": "Seoul and Paris and Kuala Lumpur and Nairobi met."}}]
    answer = httpx.post(f"{url}/predict", json={"tasks": tasks, "label_config": config}, timeout=60).json()
    assert {(r["from_name"], r["to_name"]) for r in answer["results"][0]["result"]} <= {("ner", "body")}


def test_bad_requests_get_a_400_or_404(backend):
    url, _ = backend
    assert httpx.post(f"{url}/predict", content=b"not json").status_code == 400
    missing = httpx.post(f"{url}/predict", json={"tasks": [{"id": 1, "data": {"body": "x"}}]})
    assert missing.status_code == 400 and "'text'" in missing.json()["error"]
    assert httpx.get(f"{url}/nothing").status_code == 404


def test_a_busy_port_is_an_error(backend):
    from training.errors import TrainingError

    url, predictor = backend
    with pytest.raises(TrainingError, match="use another --port"):
        make_server(predictor, "127.0.0.1", int(url.rsplit(":", 1)[1]))


def test_label_studio_fetches_a_prediction_from_the_backend_when_a_task_opens(label_studio, backend):
    url, predictor = backend
    connection = label_studio.connection
    project = client.push_project(connection, "ml-backend").id
    backend_id = client.connect_ml_backend(connection, project, url)
    assert client.connect_ml_backend(connection, project, url) == backend_id  # connected once
    text = "Seoul and Paris signed the accord in Kuala Lumpur on Monday."
    task_id = client.push_tasks(connection, project, [{"data": {"text": text, "doc_id": "live"}}]).task_ids[0]

    opened = connection.sdk.tasks.get(id=task_id)  # what the labeling UI requests as a task opens
    predictions = [p if isinstance(p, dict) else p.model_dump() for p in opened.predictions or []]
    assert [p["model_version"] for p in predictions] == [predictor.version]
    expected = predictor.predict({"tasks": [{"id": task_id, "data": {"text": text}}]})["results"][0]
    assert predictions[0]["result"] == expected["result"]
    assert predictions[0]["score"] == pytest.approx(expected["score"])


def test_predictor_refuses_a_request_without_tasks(tiny_tagger):
    with pytest.raises(ValueError, match="no 'tasks' list"):
        Predictor(tiny_tagger, "v").predict({})


def test_serve_connect_deregisters_its_backend_when_it_exits(label_studio, tiny_model_dir, tmp_path):
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    connection = label_studio.connection
    project = client.push_project(connection, "serve-exits").id
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "LABEL_STUDIO_API_KEY": label_studio.token}
    command = [sys.executable, "-m", "training", "serve", str(tiny_model_dir), "--port", str(port),
               "--connect", str(project), "--url", label_studio.url]  # fmt: skip
    for extra, stays in (([], False), (["--keep-connected"], True)):
        process = subprocess.Popen(command + extra, env=env, stdout=subprocess.PIPE, text=True)
        try:
            for line in process.stdout:
                if line.startswith("connected to project"):
                    break
            assert client.ml_backend_ids(connection, project, url), "registered while it serves"
        finally:
            process.send_signal(signal.SIGTERM)
            out, _ = process.communicate(timeout=60)
        assert process.returncode == 0
        assert bool(client.ml_backend_ids(connection, project, url)) == stays, out
        time.sleep(0.2)
    for backend in client.ml_backend_ids(connection, project, url):
        client.disconnect_ml_backend(connection, backend)
