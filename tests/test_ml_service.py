"""The ML backend as a service: bad requests, limits, slow clients, auth, batching, versions."""

from __future__ import annotations

import base64
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from training.errors import ModelError, TrainingError
from training.inference.tagger import Tagger
from training.labelstudio.ml_backend import (
    Predictor,
    ServeSettings,
    load_predictor,
    make_server,
    open_store,
    parse_predict_request,
)
from training.labelstudio.predictions import model_version
from training.labelstudio.versions import VersionStore

TEXTS = [
    "South Korea's ambassador met Malaysia's Defence Ministry in Kuala Lumpur.",
    "Paris and Seoul signed the accord on Monday.",
    "NATO ministers met in Brussels.",
]


def _tasks(texts):
    return [{"id": n, "data": {"text": text}} for n, text in enumerate(texts)]


@pytest.fixture
def serve(tiny_model_dir):
    """Start backends with given settings (and store); all are shut down after the test."""
    servers = []

    def start(settings=None, predictor=None, store=None):
        server = make_server(
            predictor or load_predictor(tiny_model_dir),
            "127.0.0.1",
            0,
            quiet=True,
            settings=settings or ServeSettings(),
            store=store,
        )
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()


def _still_serves(url: str) -> None:
    answer = httpx.post(f"{url}/predict", json={"tasks": _tasks(TEXTS[:1])}, timeout=60)
    assert answer.status_code == 200 and len(answer.json()["results"]) == 1


# --- bad requests ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "not JSON"),
        (b"\xff\xfe\x00", 400, "not UTF-8"),
        (b"[1, 2]", 400, "JSON list, not an object"),
        (b'{"tasks": {"id": 1}}', 400, "no 'tasks' list"),
        (b'{"tasks": ["just text"]}', 400, "tasks[0] is a JSON str"),
        (b'{"tasks": [{"id": 7}]}', 400, "tasks[0]: task 7: has no 'data' object"),
        (b'{"tasks": [{"id": 7, "data": {"body": "x"}}]}', 400, "data has no 'text' field"),
        (b'{"tasks": [{"id": 7, "data": {"text": 3}}]}', 400, "data.text is empty or not a string"),
        (b'{"tasks": [], "label_config": "<View><Labels"}', 400, "not valid XML"),
    ],
)
def test_malformed_and_wrongly_shaped_predict_bodies_get_a_400_naming_the_problem(
    serve, body, status, message
):
    server = serve()
    answer = httpx.post(f"{server.url}/predict", content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == status, answer.text
    assert message in answer.json()["error"]
    _still_serves(server.url)


def test_parse_predict_request_names_the_task_and_field():
    texts, names = parse_predict_request({"tasks": _tasks(["a", ""])})
    assert texts == ["a", ""] and names.text_field == "text"
    with pytest.raises(ValueError, match=r"tasks\[1\]: task 1: data has no 'text' field"):
        parse_predict_request({"tasks": [{"id": 0, "data": {"text": "x"}}, {"id": 1, "data": {}}]})


def test_too_many_tasks_and_huge_bodies_get_a_413(serve):
    server = serve(ServeSettings(max_body_bytes=4096, max_tasks=3))
    many = httpx.post(f"{server.url}/predict", json={"tasks": _tasks(["x"] * 4)})
    assert many.status_code == 413 and "send at most 3" in many.json()["error"]
    huge = {"tasks": _tasks(["Seoul " * 1000])}
    declared = httpx.post(f"{server.url}/predict", json=huge)
    assert declared.status_code == 413 and "limit is 4096" in declared.json()["error"]

    def chunks():  # no Content-Length: the limit is counted as the body streams in
        for _ in range(10):
            yield b" " * 1000

    streamed = httpx.post(f"{server.url}/predict", content=chunks())
    assert streamed.status_code == 413 and "over 4096 bytes" in streamed.json()["error"]
    _still_serves(server.url)


def test_a_slow_client_gets_a_408_and_does_not_hold_up_others(serve):
    server = serve(ServeSettings(body_timeout_s=5.0))
    with socket.create_connection((server.host, server.port)) as slow:
        slow.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 500\r\n\r\n" + b'{"tasks": ['
        )
        started = time.monotonic()
        _still_serves(server.url)  # answered while the slow body is still pending
        assert time.monotonic() - started < 5.0  # before the slow body timed out
        slow.settimeout(10)
        reply = b""
        while b"}" not in reply:  # headers and the JSON body may come in separate segments
            chunk = slow.recv(4096)
            if not chunk:
                break
            reply += chunk
        reply = reply.decode()
    assert reply.startswith("HTTP/1.1 408") and "did not arrive within 5 s" in reply
    _still_serves(server.url)


def test_unknown_endpoints_methods_and_events(serve):
    server = serve()
    assert httpx.get(f"{server.url}/nothing").status_code == 404
    assert httpx.get(f"{server.url}/predict").status_code == 405
    ignored = httpx.post(f"{server.url}/webhook", json={"action": "PROJECT_UPDATED", "project": {"id": 1}})
    assert ignored.status_code == 200 and "not a training event" in ignored.json()["status"]
    untrained = httpx.post(f"{server.url}/webhook", json={"action": "START_TRAINING", "project": {"id": 1}})
    assert untrained.status_code == 409 and "--train-config" in untrained.json()["error"]
    assert httpx.get(f"{server.url}/jobs").status_code == 404
    assert httpx.post(f"{server.url}/webhook", content=b"[]").status_code == 400


def test_a_failing_model_answers_500_and_the_worker_keeps_serving(serve, tiny_model_dir):
    predictor = load_predictor(tiny_model_dir)
    server = serve(predictor=predictor)
    good = predictor.tagger

    class Broken:
        def tag_with_confidence(self, texts):
            raise RuntimeError("out of memory")

    predictor.swap(Broken(), "broken")
    failed = httpx.post(f"{server.url}/predict", json={"tasks": _tasks(TEXTS[:1])}, timeout=60)
    assert failed.status_code == 500 and "out of memory" in failed.json()["error"]
    predictor.swap(good, "good")
    _still_serves(server.url)


# --- auth ------------------------------------------------------------------------------------


def test_basic_auth_guards_every_endpoint(serve):
    server = serve(ServeSettings(auth_user="ls", auth_password="s3cret"))
    assert httpx.get(f"{server.url}/health").status_code == 401
    assert "Basic" in httpx.get(f"{server.url}/health").headers["www-authenticate"]
    assert httpx.get(f"{server.url}/health", auth=("ls", "wrong")).status_code == 401
    assert httpx.get(f"{server.url}/health", headers={"Authorization": "Basic %%%"}).status_code == 401
    assert httpx.get(f"{server.url}/health", headers={"Authorization": "Bearer x"}).status_code == 401
    assert httpx.post(f"{server.url}/predict", json={"tasks": []}).status_code == 401
    assert httpx.get(f"{server.url}/health", auth=("ls", "s3cret")).json()["status"] == "UP"
    token = base64.b64encode(b"ls:s3cret").decode()
    answer = httpx.post(
        f"{server.url}/predict",
        json={"tasks": _tasks(TEXTS[:1])},
        headers={"Authorization": f"Basic {token}"},
    )
    assert answer.status_code == 200


def test_basic_auth_without_a_password_is_refused(tiny_model_dir):
    with pytest.raises(TrainingError, match="needs a password"):
        make_server(load_predictor(tiny_model_dir), "127.0.0.1", 0, settings=ServeSettings(auth_user="ls"))


# --- batching --------------------------------------------------------------------------------


@pytest.mark.parametrize("wait_ms", [0.0, 200.0])
def test_concurrent_requests_are_batched_and_answered_as_alone(serve, tiny_model_dir, wait_ms):
    # PyTorch: ONNX Runtime's dynamic int8 (auto on some CPUs) scales activations per batch.
    predictor = load_predictor(tiny_model_dir, backend="torch")
    server = serve(ServeSettings(batch_wait_ms=wait_ms, max_batch_texts=64), predictor=predictor)
    bodies = [{"tasks": _tasks(TEXTS[: 1 + n % 3])} for n in range(12)]
    expected = [predictor.predict(body) for body in bodies]
    batcher = server.app.state.batcher
    before = batcher.batches
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda b: httpx.post(f"{server.url}/predict", json=b, timeout=120), bodies))
    assert [a.status_code for a in answers] == [200] * 12
    for answer, alone in zip(answers, expected):
        got = answer.json()["results"]
        assert [p["result"] for p in got] == [p["result"] for p in alone["results"]]
        assert [p["score"] for p in got] == pytest.approx([p["score"] for p in alone["results"]], abs=1e-5)
    batches = batcher.batches - before
    if wait_ms == 0:
        assert batches == 12  # one model call per request
    else:
        assert batches < 12  # requests shared model calls
    status = httpx.get(f"{server.url}/status").json()
    assert status["batching"]["requests"] >= 12 and status["training"] is None


# --- versions --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def second_model_dir(tmp_path_factory, tiny_encoder_dir):
    """Another tiny model (a different random head): another version."""
    import torch

    from training.modeling.encoder import build_model, load_tokenizer
    from training.schema import BIO_TAGS

    torch.manual_seed(1)
    directory = tmp_path_factory.mktemp("second-model")
    build_model(str(tiny_encoder_dir), BIO_TAGS).save_pretrained(directory)
    load_tokenizer(str(tiny_encoder_dir), True).save_pretrained(directory)
    return directory


def test_version_store_adds_copies_and_points_at_the_current_version(
    tmp_path, tiny_model_dir, second_model_dir
):
    store, first = open_store(tiny_model_dir, tmp_path / "store")
    assert first == model_version(tiny_model_dir) and store.current() == first
    assert (tiny_model_dir / "config.json").is_file()  # copied (linked), not moved
    second = store.add(second_model_dir)
    assert store.versions() == [first, second] and store.current() == first
    store.set_current(second)
    assert store.current() == second and (store.root / "current").read_text() == second + "\n"
    assert store.add(second_model_dir) == second  # already there: unchanged
    reopened, served = open_store(store.root, store.root)  # serving the store: its current version
    assert served == second and reopened.versions() == [first, second]
    with pytest.raises(ModelError, match="no model version 'nope'"):
        store.set_current("nope")
    with pytest.raises(ModelError, match="no model version"):
        store.path("../versions")
    (store.root / "current").write_text("gone\n")
    with pytest.raises(ModelError, match="no model version 'gone'"):
        store.current()
    with pytest.raises(TrainingError, match="no current version"):
        open_store(tmp_path / "empty", tmp_path / "empty")


def test_restore_swaps_versions_while_requests_keep_being_answered(
    serve, tmp_path, tiny_model_dir, second_model_dir
):
    store = VersionStore(tmp_path / "store")
    first = store.add(tiny_model_dir)
    second = store.add(second_model_dir)
    store.set_current(first)
    server = serve(predictor=Predictor(Tagger.load(store.path(first)), first), store=store)
    assert httpx.get(f"{server.url}/versions").json() == {"current": first, "versions": [first, second]}
    stop = threading.Event()
    seen: list[tuple[int, set]] = []

    def load() -> None:
        with httpx.Client(timeout=60) as client:
            while not stop.is_set():
                answer = client.post(f"{server.url}/predict", json={"tasks": _tasks(TEXTS)})
                versions = {p["model_version"] for p in answer.json().get("results", [])}
                seen.append((answer.status_code, versions))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    while not seen and time.monotonic() < deadline:
        time.sleep(0.05)  # until the clients have been answered by the old version
    restored = httpx.post(f"{server.url}/versions/{second}/restore", timeout=60)
    deadline = time.monotonic() + 60
    while not any(second in versions for _, versions in seen) and time.monotonic() < deadline:
        time.sleep(0.05)  # until the clients have been answered by the new version
    stop.set()
    for thread in threads:
        thread.join()
    assert restored.status_code == 200 and restored.json() == {"current": second}
    assert store.current() == second and httpx.get(f"{server.url}/health").json()["model_version"] == second
    assert all(status == 200 for status, _ in seen), seen
    assert all(len(versions) == 1 for _, versions in seen)  # one model per answer
    assert {v for _, versions in seen for v in versions} == {first, second}
    missing = httpx.post(f"{server.url}/versions/nope/restore")
    assert missing.status_code == 404 and "no model version 'nope'" in missing.json()["error"]
    assert httpx.get(f"{server.url}/health").json()["model_version"] == second


# --- the serve verb's options ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--auth-user", "ls"], "set the password in $ML_BACKEND_PASSWORD"),
        (["--batch-wait-ms", "-1"], "--batch-wait-ms: -1.0"),
        (["--max-body-mb", "0"], "--max-body-mb: 0.0"),
        (["--train-config", "missing.yaml"], "--train-config missing.yaml: no such file"),
        (["--train-config", "configs/tiny.yaml"], "not both"),
        (["--train-config", "configs/from-label-studio.yaml", "--train-every", "0"], "--train-every: 0"),
    ],
)
def test_serve_refuses_bad_options_before_loading_anything(
    tiny_model_dir, tmp_path, capsys, monkeypatch, extra, message
):
    from training.cli import main

    monkeypatch.delenv("ML_BACKEND_PASSWORD", raising=False)
    store = tmp_path / "store"
    assert main(["serve", str(tiny_model_dir), "--port", "0", "--store", str(store), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not store.exists()  # nothing written before the options are known to be good


def test_serve_stops_cleanly_on_sigterm(tiny_model_dir, tmp_path):
    import signal
    import subprocess
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = tmp_path / "store"
    command = [sys.executable, "-m", "training", "serve", str(tiny_model_dir), "--port", str(port)]
    process = subprocess.Popen([*command, "--store", str(store)], stdout=subprocess.PIPE, text=True)
    try:
        first = process.stdout.readline()
        assert f"at http://127.0.0.1:{port}; versions in {store}" in first
        _still_serves(f"http://127.0.0.1:{port}")
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)
    assert process.returncode == 0
    assert (store / "current").read_text().strip() == model_version(tiny_model_dir)
