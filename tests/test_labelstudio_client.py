"""Push and pull against a real Label Studio server; retries and refusals against a scripted one."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from conftest import ROOT, make_task

from training.config import DataConfig, load_config
from training.data.dataset import build_from_config
from training.data.export import convert_tasks, read_export
from training.errors import LabelStudioError
from training.labelstudio import client
from training.labelstudio.client import resolve_source
from training.labelstudio.predictions import model_version
from training.schema import LABEL_NAMES, labeling_config_xml

CORPUS = ROOT / "data" / "corpus.json"
FAST = client.RetryPolicy(attempts=3, initial_delay_s=0.01, max_delay_s=0.02, timeout_s=2.0)


def _rows(dataset) -> dict[str, list]:
    return {
        split: sorted(
            (row["id"], row["text"], tuple((e["start"], e["end"], e["label"]) for e in row["entities"]))
            + (tuple(row["ner_tags"]),)
            for row in rows
        )
        for split, rows in dataset.items()
    }


def _files_under(directory: Path) -> list[Path]:
    return [path for path in directory.rglob("*") if path.is_file()]


# Against the real server


def test_push_project_creates_once_with_the_schema_config(label_studio):
    first = client.push_project(label_studio.connection, "push-project-test")
    again = client.push_project(label_studio.connection, "push-project-test")
    assert first.created and not again.created and not again.config_updated
    assert again.id == first.id
    project = client.get_project(label_studio.connection, first.id)
    assert project.label_config.strip() == labeling_config_xml().strip()


def test_corpus_round_trip_gives_the_same_dataset_as_the_file(label_studio, tmp_path, monkeypatch):
    connection = label_studio.connection
    project = client.push_project(connection, "corpus-round-trip").id
    corpus = read_export(CORPUS)
    first = client.push_tasks(connection, project, corpus)
    second = client.push_tasks(connection, project, corpus)
    n = len(corpus)
    assert (first.imported, first.annotations, first.skipped) == (n, n, 0)
    assert (second.imported, second.skipped) == (0, n)

    # The config names the server instead of a file; the key comes from the named variable.
    monkeypatch.setenv("ROUND_TRIP_KEY", label_studio.token)
    monkeypatch.delenv(client.API_KEY_ENV, raising=False)
    source = {"url": label_studio.url, "project": project, "api_key_env": "ROUND_TRIP_KEY"}
    config = load_config(None, [f"data.label_studio={json.dumps({**source, 'snapshot_dir': str(tmp_path)})}"])
    resolved = config.model_copy(update={"data": resolve_source(config.data)})
    snapshot_dir = resolved.data.source.parent
    assert resolved.data.label_studio is None and snapshot_dir.parent == tmp_path

    manifest = json.loads((snapshot_dir / "manifest.json").read_text())
    assert manifest["server"] == label_studio.url and manifest["project"] == project
    assert (manifest["tasks"], manifest["annotations"], manifest["cancelled_annotations"]) == (n, n, 0)
    import hashlib

    assert manifest["sha256"] == hashlib.sha256(resolved.data.source.read_bytes()).hexdigest()
    for path in _files_under(tmp_path):
        assert label_studio.token not in path.read_text(encoding="utf-8")
    assert label_studio.token not in resolved.to_yaml()

    from_server, _ = build_from_config(resolved.data, save=False)
    from_file, _ = build_from_config(load_config(None).data, save=False)
    assert _rows(from_server) == _rows(from_file)
    assert {split: len(rows) for split, rows in from_server.items()} == {
        "train": 245,
        "validation": 60,
        "test": 24,
        "realnews": 44,
    }

    # Nothing changed on the server: the next dataset/train reuses the snapshot it has.
    again = resolve_source(config.data)
    assert again.source == resolved.data.source
    assert [p.name for p in tmp_path.iterdir()] == [snapshot_dir.name]


def _second_annotator(connection) -> int:
    email = "reviewer@localhost.localdomain"
    for user in connection.sdk.users.list():
        if user.email == email:
            return user.id
    return connection.sdk.users.create(email=email, username="reviewer").id


def test_annotators_cancelled_and_empty_annotations_follow_the_conversion_rules(label_studio, tmp_path):
    connection = label_studio.connection
    project = client.push_project(connection, "conversion-rules").id
    reviewer = _second_annotator(connection)
    text = "Seoul and Paris signed the accord in Kuala Lumpur."

    def annotation(user, spans, ground_truth=False, cancelled=False):
        return make_task(
            0, text, spans, ground_truth=ground_truth, was_cancelled=cancelled, completed_by=user
        )["annotations"][0]

    two = make_task(
        1,
        text,
        [],
        doc_id="two-annotators",
        annotations=[
            annotation(1, [(0, 5, "GPE")]),
            annotation(reviewer, [(10, 15, "GPE")], ground_truth=True),
        ],
    )
    cancelled = make_task(
        2, text + " Again.", [], doc_id="cancelled", annotations=[annotation(1, [], cancelled=True)]
    )
    empty = make_task(3, text + " Twice.", [], doc_id="empty")
    unannotated = make_task(4, text + " Never.", [], doc_id="unannotated", annotations=[])
    client.push_tasks(connection, project, [two, cancelled, empty, unannotated])

    snapshot = client.pull(connection, project, out=tmp_path / "snapshot")
    tasks = read_export(snapshot.export_path)
    assert sorted(t["data"]["doc_id"] for t in tasks) == ["cancelled", "empty", "two-annotators"]
    assert (snapshot.manifest["tasks"], snapshot.manifest["annotations"]) == (3, 3)
    assert snapshot.manifest["cancelled_annotations"] == 1

    documents, report = convert_tasks(tasks, DataConfig(source=snapshot.export_path))
    by_id = {d.id: d for d in documents}
    ground_truth = [(s.start, s.end, s.label) for s in by_id["two-annotators"].spans]
    assert ground_truth == [(10, 15, "GPE")]  # the reviewer's ground truth wins
    assert by_id["empty"].spans == []  # an empty annotation is a document without entities
    assert "cancelled" not in by_id
    assert [e["reason"] for e in report.excluded] == ["only cancelled annotations"]

    latest = DataConfig(source=snapshot.export_path, annotation={"prefer": "latest", "annotator": 1})
    documents, _ = convert_tasks(tasks, latest)
    chosen = {d.id: d for d in documents}["two-annotators"]
    assert [(s.start, s.end) for s in chosen.spans] == [(0, 5)]  # only annotator 1's

    # --since: only tasks whose annotations changed after the moment.
    moment = datetime.now(timezone.utc)
    time.sleep(0.05)
    empty_task = next(t for t in tasks if t["data"]["doc_id"] == "empty")
    connection.sdk.annotations.create(id=empty_task["id"], result=[], was_cancelled=False)
    recent = client.pull(connection, project, out=tmp_path / "recent", since=moment.isoformat())
    assert [t["data"]["doc_id"] for t in read_export(recent.export_path)] == ["empty"]
    assert recent.manifest["since"].startswith(moment.strftime("%Y-%m-%dT%H:%M:%S"))


def test_predictions_are_pushed_once_scored_and_ordered_least_confident_first(
    label_studio, tiny_tasks, tiny_model_dir, tiny_tagger
):
    connection = label_studio.connection
    project = client.push_project(connection, "pre-annotations").id
    # Short texts keep the random-weight model's many predicted spans cheap to import.
    unannotated = [
        {**task, "data": {**task["data"], "text": task["data"]["text"][:400]}, "annotations": []}
        for task in tiny_tasks[4:10]
    ]
    client.push_tasks(connection, project, tiny_tasks[:4] + unannotated)
    version = model_version(tiny_model_dir)

    first = client.push_predictions(connection, project, tiny_tagger, version)
    again = client.push_predictions(connection, project, tiny_tagger, version)
    assert (first.predicted, first.already_predicted) == (6, 0)
    assert (again.predicted, again.already_predicted) == (0, 6)

    tasks = [t for page in client.iter_task_pages(connection, project) for t in page]
    scores = {}
    for task in tasks:
        predictions = [p for p in task["predictions"] if p["model_version"] == version]
        if task["annotations"]:
            assert predictions == []
            continue
        assert len(predictions) == 1
        prediction = predictions[0]
        assert 0 < prediction["score"] <= 1
        scores[task["id"]] = prediction["score"]
        text = task["data"]["text"]
        for result in prediction["result"]:
            value = result["value"]
            assert text[value["start"] : value["end"]] == value["text"]  # no astral characters here
            assert value["labels"][0] in LABEL_NAMES and 0 < result["score"] <= 1
    assert len(scores) == 6 and len(set(scores.values())) > 1

    project_now = client.get_project(connection, project)
    assert project_now.sampling == client.UNCERTAINTY_SAMPLING and project_now.model_version == version
    response = httpx.get(
        f"{label_studio.url}/api/projects/{project}/next",
        headers={"Authorization": f"Token {label_studio.token}"},
        timeout=30,
    )
    response.raise_for_status()
    assert response.json()["id"] == min(scores, key=scores.get)  # the least confident task first


@pytest.mark.filterwarnings("ignore:The `parse_obj` method is deprecated")  # inside the SDK's token refresh
def test_a_personal_access_token_works_as_well_as_the_legacy_token(label_studio, tmp_path):
    personal = label_studio.connection.sdk.tokens.create().token  # a JWT refresh token
    assert personal.count(".") == 2 and personal != label_studio.token
    connection = client.LabelStudioConnection(label_studio.url, personal, FAST)
    project = client.push_project(connection, "personal-token").id
    client.push_tasks(connection, project, [make_task(1, "Seoul met Paris.", [(0, 5, "GPE")], doc_id="pat")])
    snapshot = client.pull(connection, project, out=tmp_path / "snapshot")
    assert snapshot.manifest["tasks"] == 1
    assert (
        personal
        not in snapshot.export_path.read_text() + (tmp_path / "snapshot" / "manifest.json").read_text()
    )


def test_wrong_key_and_wrong_project_fail_at_once_with_what_to_fix(label_studio):
    wrong = client.LabelStudioConnection(label_studio.url, "not-a-valid-token-0123456789", FAST)
    with pytest.raises(
        LabelStudioError, match="rejected the API key \\(401\\).*LABEL_STUDIO_API_KEY"
    ) as info:
        client.pull(wrong, 1)
    assert "not-a-valid-token" not in str(info.value)
    with pytest.raises(LabelStudioError, match="not found .*404.*project id"):
        client.pull(label_studio.connection, 99999)


# Against a scripted server: retries, timeouts, refusals


class ScriptedServer:
    """An HTTP server answering from a script: ``answer(method, path, n) -> (status, body, delay)``."""

    def __init__(self, answer) -> None:
        self.requests: list[tuple[str, str, bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                path = self.path.split("?", 1)[0]
                outer.requests.append((self.command, self.path, body))
                count = sum(1 for m, p, _ in outer.requests if m == self.command and p.split("?")[0] == path)
                status, payload, delay = answer(self.command, path, count)
                time.sleep(delay)
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST = do_PATCH = _reply

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def count(self, method: str, path: str) -> int:
        return sum(1 for m, p, _ in self.requests if m == method and p.split("?")[0] == path)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


PROJECT = {"id": 1, "title": "scripted", "label_config": labeling_config_xml()}


def _task(n: int) -> dict:
    return make_task(n, f"Seoul, day {n}.", [(0, 5, "GPE")], doc_id=f"d{n}")


def _page(tasks: list[dict]) -> dict:
    return {"tasks": tasks, "total": len(tasks), "total_annotations": len(tasks), "total_predictions": 0}


@pytest.fixture
def scripted():
    servers = []

    def make(answer) -> ScriptedServer:
        servers.append(ScriptedServer(answer))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def test_a_5xx_is_retried_then_the_pull_succeeds(scripted, tmp_path):
    def answer(method, path, n):
        if path == "/api/projects/1/":
            return (500, {"detail": "boom"}, 0) if n == 1 else (200, PROJECT, 0)
        return 200, _page([_task(1), _task(2)]), 0

    server = scripted(answer)
    snapshot = client.pull(client.LabelStudioConnection(server.url, "key", FAST), 1, out=tmp_path / "s")
    assert server.count("GET", "/api/projects/1/") == 2
    assert [t["data"]["doc_id"] for t in read_export(snapshot.export_path)] == ["d1", "d2"]


def test_persistent_5xx_fails_clearly_and_a_failed_pull_writes_nothing(scripted, tmp_path):
    def answer(method, path, n):
        if path == "/api/projects/1/":
            return 200, PROJECT, 0
        # A full first page, then the second page keeps failing.
        return (200, _page([_task(i) for i in range(client.PAGE_SIZE)]), 0) if n == 1 else (503, {}, 0)

    server = scripted(answer)
    connection = client.LabelStudioConnection(server.url, "key", FAST)
    with pytest.raises(LabelStudioError, match="page 2.*failed 3 times \\(HTTP 503\\).*re-run"):
        client.pull(connection, 1, out=tmp_path / "snapshot")
    assert list(tmp_path.iterdir()) == []  # no snapshot, no temporary leftovers


def test_a_401_fails_at_once_without_showing_the_key(scripted, tmp_path):
    server = scripted(lambda method, path, n: (401, {"detail": "Invalid token."}, 0))
    connection = client.LabelStudioConnection(server.url, "secret-key-value", FAST)
    with pytest.raises(LabelStudioError, match="401") as info:
        client.pull(connection, 1, out=tmp_path / "s")
    assert len(server.requests) == 1
    assert "secret-key-value" not in str(info.value) and "secret-key-value" not in repr(connection)
    assert list(tmp_path.iterdir()) == []


def test_a_403_says_what_to_fix(scripted):
    server = scripted(lambda method, path, n: (403, {"detail": "no"}, 0))
    with pytest.raises(LabelStudioError, match="403.*project member"):
        client.push_project(client.LabelStudioConnection(server.url, "key", FAST), "x")
    assert len(server.requests) == 1


def test_timeouts_are_retried_then_reported(scripted):
    server = scripted(lambda method, path, n: (200, PROJECT, 1.0))
    policy = client.RetryPolicy(attempts=2, initial_delay_s=0.01, max_delay_s=0.02, timeout_s=0.2)
    with pytest.raises(LabelStudioError, match="failed 2 times \\(no answer within 0.2 s\\)"):
        client.get_project(client.LabelStudioConnection(server.url, "key", policy), 1)
    assert server.count("GET", "/api/projects/1/") == 2


def test_connection_refused_is_reported_after_retries():
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    connection = client.LabelStudioConnection(f"http://127.0.0.1:{port}", "key", FAST)
    with pytest.raises(LabelStudioError, match="failed 3 times \\(connection refused or unreachable\\)"):
        client.get_project(connection, 1)


def test_an_import_whose_answer_was_lost_is_not_imported_twice(scripted):
    imported = []

    def answer(method, path, n):
        if path == "/api/projects/1/":
            return 200, PROJECT, 0
        if path == "/api/users/":
            return 200, [{"id": 1, "email": "a@b.c"}], 0
        if path == "/api/tasks/":
            return 200, _page(imported), 0
        if path == "/api/projects/1/import":
            if n == 1:
                imported.append(_task(1))  # the server imported d1, then the answer was lost
                return 502, {}, 0
            return 201, {"task_count": 1, "task_ids": [2]}, 0
        return 404, {}, 0

    server = scripted(answer)
    result = client.push_tasks(client.LabelStudioConnection(server.url, "key", FAST), 1, [_task(1), _task(2)])
    posts = [json.loads(body) for method, path, body in server.requests if method == "POST"]
    assert [[t["data"]["doc_id"] for t in post] for post in posts] == [["d1", "d2"], ["d2"]]
    assert (result.imported, result.task_ids) == (2, [2])  # d1 by the first try, d2 by the retry


def test_predictions_whose_answer_was_lost_are_not_imported_twice(scripted, tiny_tagger):
    served: set[int] = set()
    tasks = [{"id": n, "data": {"text": f"Seoul met Paris on day {n}."}, "predictions": []} for n in (1, 2)]

    def answer(method, path, n):
        if path == "/api/projects/1/":
            return 200, PROJECT, 0
        if path == "/api/tasks/":
            return 200, _page(tasks), 0
        if path.startswith("/api/tasks/"):
            task_id = int(path.strip("/").rsplit("/", 1)[1])
            predictions = [{"model_version": "v1", "result": []}] if task_id in served else []
            return 200, {"id": task_id, "data": {}, "predictions": predictions}, 0
        if path == "/api/projects/1/import/predictions":
            if n == 1:
                served.add(1)  # task 1's prediction was stored, then the answer was lost
                return 503, {}, 0
            return 201, {"created": 1}, 0
        return 404, {}, 0

    server = scripted(answer)
    connection = client.LabelStudioConnection(server.url, "key", FAST)
    result = client.push_predictions(connection, 1, tiny_tagger, "v1", order_by_uncertainty=False)
    posts = [json.loads(body) for method, path, body in server.requests if method == "POST"]
    assert [[item["task"] for item in post] for post in posts] == [[1, 2], [2]]
    assert result.predicted == 2


# Units


def test_import_shape_keeps_known_annotators_and_explicit_ground_truth():
    task = make_task(5, "Seoul.", [(0, 5, "GPE")], doc_id="x", completed_by=7)
    task["predictions"] = [3, {"result": [], "score": 0.5, "model_version": "m"}]  # an id and a full one
    shaped = client.import_shape(task, known_users={1})
    assert shaped["annotations"][0]["ground_truth"] is False
    assert "completed_by" not in shaped["annotations"][0]  # user 7 is unknown to the server
    assert shaped["predictions"] == [{"result": [], "score": 0.5, "model_version": "m"}]
    assert client.import_shape(task, known_users={7})["annotations"][0]["completed_by"] == 7


def test_push_needs_unique_doc_ids():
    connection = client.LabelStudioConnection("http://127.0.0.1:9", "key", FAST)
    with pytest.raises(LabelStudioError, match="no data.doc_id"):
        client.push_tasks(connection, 1, [make_task(1, "Seoul.", [])])
    with pytest.raises(LabelStudioError, match="doc_id 'a' repeats task 1"):
        client.push_tasks(
            connection, 1, [make_task(1, "A.", [], doc_id="a"), make_task(2, "B.", [], doc_id="a")]
        )


def test_since_accepts_iso_dates_and_rejects_the_rest():
    assert client.parse_since("2026-11-28") == datetime(2026, 11, 28, tzinfo=timezone.utc)
    assert client.parse_since("2026-11-28T09:30:00Z").hour == 9
    with pytest.raises(LabelStudioError, match="not an ISO 8601 time"):
        client.parse_since("yesterday")


def test_the_api_key_comes_from_the_named_variable_only(monkeypatch):
    monkeypatch.setenv("MY_LS_KEY", "k-123")
    assert client.resolve_api_key("http://example.invalid", "MY_LS_KEY") == "k-123"
    monkeypatch.delenv("MY_LS_KEY")
    with pytest.raises(LabelStudioError, match="set MY_LS_KEY"):
        client.resolve_api_key("http://example.invalid", "MY_LS_KEY")


def test_a_config_cannot_name_both_a_file_and_a_server_nor_hold_a_key():
    from training.errors import ConfigError

    with pytest.raises(ConfigError, match="not both"):
        load_config(None, ["data.source=x.json", "data.label_studio={project: 1}"])
    with pytest.raises(ConfigError, match="data.label_studio.api_key: unknown key"):
        load_config(None, ["data.label_studio={project: 1, api_key: abc}"])


# The CLI verbs, ending with `train` pulling from the server


def test_cli_push_pull_then_train_from_the_server(
    label_studio, tiny_tasks, tiny_encoder_dir, tiny_model_dir, tmp_path, monkeypatch, capsys
):
    from training.cli import main

    monkeypatch.setenv("LABEL_STUDIO_URL", label_studio.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", label_studio.token)
    export = tmp_path / "tiny.json"
    export.write_text(json.dumps(tiny_tasks))

    assert main(["labelstudio", "status", "--data-dir", label_studio.state.data_dir]) == 0
    assert main(["push", "project", "--title", "cli"]) == 0
    project = capsys.readouterr().out.split("project ", 1)[1].split()[0]
    assert main(["push", "tasks", str(export), "--project", project]) == 0
    assert main(["push", "tasks", str(export), "--project", project]) == 0
    assert main(["push", "predictions", str(tiny_model_dir), "--project", project, "--keep-order"]) == 0
    assert main(["pull", "--project", project, "--out", str(tmp_path / "snapshot")]) == 0
    out = capsys.readouterr().out
    assert "imported 12 tasks (12 annotations), 0 already there" in out
    assert "imported 0 tasks (0 annotations), 12 already there" in out
    assert "0 tasks pre-annotated" in out  # every task is annotated
    assert f"12 tasks, 12 annotations (0 cancelled) from {label_studio.url} project {project}" in out

    # A config that names the server (URL and key from the environment) instead of a file.
    config = tmp_path / "from-server.yaml"
    config.write_text(
        f"data:\n  label_studio:\n    project: {project}\n    snapshot_dir: {tmp_path / 'snapshots'}\n"
    )
    overrides = [
        f"data.dataset_dir={tmp_path / 'dataset'}",
        f"model.name={tiny_encoder_dir}",
        "model.case_markers=true",
        "model.max_length=32",
        "model.stride=8",
        f"training.output_dir={tmp_path / 'model'}",
        "training.epochs=0.1",  # a few steps: this checks where the data comes from
        "training.progress=false",
        "training.bf16=false",
    ]
    assert main(["train", str(config)] + [x for o in overrides for x in ("--set", o)]) == 0
    output = capsys.readouterr()
    assert "pulled 12 tasks" in output.out
    saved = load_config(tmp_path / "model" / "training_config.yaml")
    assert saved.data.label_studio is None and saved.data.source.name == "export.json"
    assert saved.data.source.parent.parent == tmp_path / "snapshots"
    assert label_studio.token not in output.out + output.err
    for path in _files_under(tmp_path):
        if path.suffix in (".json", ".yaml", ".md", ".txt"):
            assert label_studio.token not in path.read_text(encoding="utf-8", errors="replace"), path
