"""Serve a trained model as a Label Studio ML backend: ``python -m training serve MODEL_DIR``.

Label Studio's ML backend protocol on FastAPI + uvicorn (ASGI), 127.0.0.1 by default:

- ``GET /health`` -> ``{"status": "UP", "model_class": ..., "model_version": ...}``
- ``POST /setup`` (project, schema, ...) -> ``{"model_version": ...}``
- ``POST /predict`` (``{"tasks": [...], "label_config": ...}``) -> ``{"results": [prediction per task]}``,
  each prediction ``{"model_version", "score", "result"}`` as ``push predictions`` writes them.
- ``POST /webhook``: ``START_TRAINING`` (Label Studio's "Start Training") starts a training job
  (``jobs``); annotation events count towards ``--train-every``; other events are acknowledged.
- ``GET /status``, ``GET /jobs``, ``GET /jobs/{id}``, ``POST /jobs/{id}/cancel``: training jobs.
- ``GET /versions``, ``POST /versions/{version}/restore``: the store's versions (``versions``).

Concurrent ``/predict`` requests are batched: one worker thread takes the first waiting
request, collects whatever else arrives within ``batch_wait_ms`` (up to ``max_batch_texts``
texts) and runs one ``Tagger`` call for all of them. A promoted model is swapped in between
two batches: a request is answered by exactly one model, and none is dropped.

Bad requests get a 4xx with ``{"error": ...}`` naming the task and field: malformed JSON,
wrong shapes, tasks without text (400), bodies over ``max_body_bytes`` (413), bodies that do
not arrive within ``body_timeout_s`` (408), a missing or wrong HTTP basic auth (401).

Connect it in Label Studio (project Settings -> Model -> Connect model, URL
``http://127.0.0.1:9090``) or with ``serve --connect PROJECT``. ``/setup`` also carries an
access token of the project's owner: it is never read, logged or stored here.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import queue
import secrets
import socket
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from training.data.export import task_text
from training.errors import TrainingError
from training.inference.tagger import Tagger
from training.labelstudio.jobs import ANNOTATION_EVENTS, START_TRAINING, JobManager
from training.labelstudio.predictions import (
    LabelingNames,
    as_predictions,
    labeling_names,
    model_version,
    predict_texts,
)
from training.labelstudio.versions import VersionStore

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9090
# Label Studio sends a handful of tasks per request; 8 MiB is some 2,000 news articles.
MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_TASKS = 100
BODY_TIMEOUT_S = 30.0
# Measured in benchmarks/serving.py: a few ms gather concurrent requests without delaying a lone one much.
BATCH_WAIT_MS = 5.0
MAX_BATCH_TEXTS = 32


class BadRequest(ValueError):
    """A request the backend refuses: its status code and a message naming what is wrong."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ServedModel:
    """A loaded model and its version: swapped as one, so a batch never mixes two models."""

    tagger: Tagger
    version: str


class Predictor:
    """The model behind the backend, swappable while it serves."""

    def __init__(self, tagger: Tagger, version: str, load_options: dict | None = None) -> None:
        self._served = ServedModel(tagger, version)
        self._lock = threading.Lock()  # torch inference is not re-entrant here
        # How new versions are loaded (``Tagger.load`` keyword arguments: backend, quantize).
        self.load_options = dict(load_options or {})

    @property
    def served(self) -> ServedModel:
        return self._served

    @property
    def version(self) -> str:
        return self._served.version

    @property
    def tagger(self) -> Tagger:
        return self._served.tagger

    def swap(self, tagger: Tagger, version: str) -> None:
        """Serve ``tagger`` from the next batch on (a reference swap: atomic)."""
        self._served = ServedModel(tagger, version)

    def tag(self, texts: Sequence[str]) -> tuple[list[tuple[list, float]], str]:
        """``tag_with_confidence`` of ``texts`` by the current model, and its version."""
        served = self._served
        with self._lock:
            return served.tagger.tag_with_confidence(list(texts)), served.version

    def predict(self, payload: dict) -> dict:
        """The ``/predict`` answer for a request body (one call, no batching)."""
        texts, names = parse_predict_request(payload)
        served = self._served
        with self._lock:
            results = predict_texts(served.tagger, texts, names, served.version)
        return {"results": results, "model_version": served.version}


def parse_predict_request(payload: object, max_tasks: int = MAX_TASKS) -> tuple[list[str], LabelingNames]:
    """The texts of a ``/predict`` body and the labeling names; ``BadRequest`` naming the problem."""
    if not isinstance(payload, dict):
        raise BadRequest(f"the request body is a JSON {type(payload).__name__}, not an object")
    tasks = payload.get("tasks")
    if not isinstance(tasks, list):
        raise BadRequest("the request has no 'tasks' list")
    if len(tasks) > max_tasks:
        raise BadRequest(f"{len(tasks)} tasks in one request; send at most {max_tasks}", 413)
    try:
        names = labeling_names(payload.get("label_config"))
    except TrainingError as exc:
        raise BadRequest(str(exc)) from None
    texts = []
    for n, task in enumerate(tasks):
        if not isinstance(task, dict):
            raise BadRequest(f"tasks[{n}] is a JSON {type(task).__name__}, not a task object")
        try:
            texts.append(task_text(task, names.text_field, allow_blank=True))
        except TrainingError as exc:
            raise BadRequest(f"tasks[{n}]: {exc}") from None
    return texts, names


# --- dynamic batching ----------------------------------------------------------------------


@dataclass
class _Pending:
    texts: list[str]
    future: Future = field(default_factory=Future)


class Batcher:
    """One worker thread that answers queued requests, several per ``Tagger`` call.

    ``batch_wait_ms`` 0 answers one request per call (no batching); otherwise the worker waits
    up to that long after the first request for others, up to ``max_batch_texts`` texts.
    Requests that queued while a batch ran join the next batch without waiting.
    """

    def __init__(
        self,
        predictor: Predictor,
        batch_wait_ms: float = BATCH_WAIT_MS,
        max_batch_texts: int = MAX_BATCH_TEXTS,
    ) -> None:
        self.predictor = predictor
        self.wait_s = max(batch_wait_ms, 0.0) / 1000
        self.max_texts = max(max_batch_texts, 1)
        self.batches = 0
        self.requests = 0
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="batcher", daemon=True)
        self._thread.start()

    def submit(self, texts: list[str]) -> Future:
        """A future of ``(tag_with_confidence results, model version)`` for ``texts``."""
        pending = _Pending(texts)
        self._queue.put(pending)
        return pending.future

    def close(self) -> None:
        """Stop the worker once the queue is drained."""
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _collect(self, first: _Pending) -> tuple[list[_Pending], bool]:
        batch, size = [first], len(first.texts)
        if self.wait_s == 0:
            return batch, False
        deadline = time.monotonic() + self.wait_s
        while size < self.max_texts:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
            if item is None:
                return batch, True
            batch.append(item)
            size += len(item.texts)
        return batch, False

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, stop = self._collect(first)
            texts = [text for pending in batch for text in pending.texts]
            try:
                tagged, version = self.predictor.tag(texts)
            except Exception as exc:  # answered as a 500 per request; the worker keeps serving
                for pending in batch:
                    pending.future.set_exception(exc)
            else:
                start = 0
                for pending in batch:
                    pending.future.set_result((tagged[start : start + len(pending.texts)], version))
                    start += len(pending.texts)
            self.batches += 1
            self.requests += len(batch)
            if stop:
                return


# --- the application -----------------------------------------------------------------------


@dataclass(frozen=True)
class ServeSettings:
    """Limits, batching and authentication of the HTTP service."""

    max_body_bytes: int = MAX_BODY_BYTES
    max_tasks: int = MAX_TASKS
    body_timeout_s: float = BODY_TIMEOUT_S
    batch_wait_ms: float = BATCH_WAIT_MS
    max_batch_texts: int = MAX_BATCH_TEXTS
    # HTTP basic auth (Label Studio's ML backend settings send it); None: no auth.
    auth_user: str | None = None
    auth_password: str | None = field(default=None, repr=False)


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class BasicAuth:
    """ASGI middleware: every request needs HTTP basic auth with the configured user and password."""

    def __init__(self, app, user: str, password: str) -> None:
        self.app = app
        self._expected = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and not self._authorized(scope):
            challenge = {"WWW-Authenticate": 'Basic realm="ml-backend"'}
            response = _error(401, "HTTP basic auth required", challenge)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _authorized(self, scope) -> bool:
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                if scheme.lower() != "basic":
                    return False
                try:
                    token = base64.b64encode(base64.b64decode(token.strip(), validate=True)).decode("ascii")
                except (binascii.Error, ValueError):
                    return False
                return secrets.compare_digest(token, self._expected)
        return False


async def read_json(request: Request, settings: ServeSettings) -> object:
    """The request body as JSON: 413 over the size limit, 408 when it arrives too slowly, 400 if not JSON."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadRequest(f"Content-Length {declared!r} is not a number")
        if int(declared) > settings.max_body_bytes:
            raise BadRequest(f"request body of {declared} bytes; the limit is {settings.max_body_bytes}", 413)

    async def gather() -> bytes:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > settings.max_body_bytes:
                raise BadRequest(f"request body over {settings.max_body_bytes} bytes", 413)
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        raw = await asyncio.wait_for(gather(), settings.body_timeout_s)
    except (asyncio.TimeoutError, TimeoutError):
        message = f"the request body did not arrive within {settings.body_timeout_s:g} s"
        raise BadRequest(message, 408) from None
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except UnicodeDecodeError:
        raise BadRequest("the request body is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise BadRequest(f"the request body is not JSON: {exc.msg} at {where}") from None


def _project_id(payload: dict) -> int:
    project = payload.get("project")
    if isinstance(project, dict):
        project = project.get("id")
    if isinstance(project, str) and project.split(".", 1)[0].isdigit():
        project = int(project.split(".", 1)[0])  # Label Studio's "<id>.<created time>"
    if not isinstance(project, int) or isinstance(project, bool) or project < 1:
        raise BadRequest("the event names no project ('project' object with an 'id', or a project id)")
    return project


def create_app(
    predictor: Predictor,
    settings: ServeSettings = ServeSettings(),
    store: VersionStore | None = None,
    jobs: JobManager | None = None,
) -> FastAPI:
    """The ASGI application (its ``state.batcher`` runs until ``app.state.batcher.close()``)."""
    app = FastAPI(title="training ML backend", docs_url=None, redoc_url=None, openapi_url=None)
    batcher = Batcher(predictor, settings.batch_wait_ms, settings.max_batch_texts)
    app.state.batcher = batcher
    app.state.predictor = predictor
    app.state.jobs = jobs

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, exc: BadRequest) -> JSONResponse:
        return _error(exc.status, str(exc))

    @app.exception_handler(404)
    async def not_found(request: Request, exc) -> JSONResponse:
        return _error(404, f"no such endpoint: {request.method} {request.url.path}")

    @app.exception_handler(405)
    async def wrong_method(request: Request, exc) -> JSONResponse:
        return _error(405, f"{request.method} is not allowed on {request.url.path}")

    @app.get("/")
    @app.get("/health")
    async def health() -> dict:
        return {"status": "UP", "model_class": "Tagger", "model_version": predictor.version}

    @app.post("/setup")
    async def setup(request: Request) -> dict:
        await read_json(request, settings)  # read (and size-checked), never kept: it carries a token
        return {"model_version": predictor.version}

    @app.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        texts, names = parse_predict_request(await read_json(request, settings), settings.max_tasks)
        if not texts:
            return JSONResponse({"results": [], "model_version": predictor.version})
        try:
            tagged, version = await asyncio.wrap_future(batcher.submit(texts))
        except Exception as exc:
            return _error(500, f"the model failed on this request: {type(exc).__name__}: {exc}")
        results = as_predictions(texts, tagged, names, version)
        return JSONResponse({"results": results, "model_version": version})

    @app.post("/webhook")
    async def webhook(request: Request) -> JSONResponse:
        payload = await read_json(request, settings)
        if not isinstance(payload, dict):
            raise BadRequest("the event is not a JSON object")
        action = payload.get("action")
        if action == START_TRAINING:
            if jobs is None:
                raise BadRequest("this backend does not train: serve with --train-config CONFIG", 409)
            job, started = jobs.start(_project_id(payload), "Label Studio START_TRAINING")
            status = "started" if started else f"queued: runs after job {job.id}"
            return JSONResponse({"status": status, "job": job.id})
        if action in ANNOTATION_EVENTS:
            if jobs is None:
                return JSONResponse({"status": "ignored: this backend does not train"})
            annotations = payload.get("annotations")
            count = len(annotations) if isinstance(annotations, list) else 1
            return JSONResponse(jobs.annotation_event(_project_id(payload), count))
        return JSONResponse({"status": f"ignored: {action!r} is not a training event"})

    @app.get("/status")
    async def status() -> dict:
        return {
            "model_version": predictor.version,
            "batching": {
                "wait_ms": settings.batch_wait_ms,
                "max_texts": settings.max_batch_texts,
                "batches": batcher.batches,
                "requests": batcher.requests,
            },
            "training": jobs.status() if jobs is not None else None,
        }

    def _jobs() -> JobManager:
        if jobs is None:
            raise BadRequest("this backend does not train: serve with --train-config CONFIG", 404)
        return jobs

    @app.get("/jobs")
    async def list_jobs() -> dict:
        return {"jobs": [job.to_dict() for job in _jobs().jobs()]}

    @app.get("/jobs/{job_id}")
    async def get_job(job_id: str) -> dict:
        try:
            return _jobs().get(job_id).to_dict()
        except KeyError:
            raise BadRequest(f"no training job {job_id!r}", 404) from None

    @app.post("/jobs/{job_id}/cancel")
    async def cancel_job(job_id: str) -> dict:
        try:
            return _jobs().cancel(job_id).to_dict()
        except KeyError:
            raise BadRequest(f"no training job {job_id!r}", 404) from None

    @app.get("/versions")
    async def versions() -> dict:
        known = store.versions() if store is not None else [predictor.version]
        return {"current": predictor.version, "versions": known}

    @app.post("/versions/{version}/restore")
    async def restore(version: str) -> dict:
        if store is None:
            raise BadRequest("this backend has no version store: serve with --store DIR", 404)
        try:
            await asyncio.to_thread(activate, store, predictor, version)
        except TrainingError as exc:
            raise BadRequest(str(exc), 404) from None
        return {"current": predictor.version}

    return app


def activate(store: VersionStore, predictor: Predictor, version: str) -> None:
    """Load ``version`` from the store, make it ``current`` and serve it (the old one until loaded)."""
    tagger = Tagger.load(store.path(version), **predictor.load_options)
    store.set_current(version)
    predictor.swap(tagger, version)


# --- the server ----------------------------------------------------------------------------


class BackendServer:
    """uvicorn serving the application on a socket bound at construction (port 0: a free one)."""

    def __init__(self, app: FastAPI, sock: socket.socket, quiet: bool = False) -> None:
        self.app = app
        self.socket = sock
        self.host, self.port = sock.getsockname()[:2]
        config = uvicorn.Config(
            app,
            log_level="warning" if quiet else "info",
            access_log=not quiet,  # method, path and status; bodies are never logged
            timeout_keep_alive=5,
            timeout_graceful_shutdown=10,
            lifespan="off",
        )
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def server_address(self) -> tuple[str, int]:
        return self.host, self.port

    def serve_forever(self) -> None:
        """Serve until ``shutdown`` (or, in the main thread, SIGINT/SIGTERM)."""
        self.server.run(sockets=[self.socket])

    def start(self) -> None:
        """Serve in a background thread; returns once the server accepts connections."""
        self._thread = threading.Thread(target=self.serve_forever, name="uvicorn", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise TrainingError(f"the ML backend on {self.url} did not start")
            time.sleep(0.01)

    def shutdown(self) -> None:
        """Stop serving (finishing requests in flight), the batcher and any training job."""
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.close()

    def close(self) -> None:
        """Release the batcher, the training jobs and the socket (after ``serve_forever`` returned)."""
        if self.app.state.jobs is not None:
            self.app.state.jobs.close()
        self.app.state.batcher.close()
        self.socket.close()


def make_server(
    predictor: Predictor,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    quiet: bool = False,
    settings: ServeSettings = ServeSettings(),
    store: VersionStore | None = None,
    jobs: JobManager | None = None,
) -> BackendServer:
    """A bound (not yet serving) backend; port 0 picks a free port (see ``url``)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise TrainingError(f"cannot listen on {host}:{port}: {exc.strerror}; use another --port") from None
    sock.listen(2048)
    sock.setblocking(False)
    app = create_app(predictor, settings, store, jobs)
    if settings.auth_user is not None:
        app = _with_auth(app, settings)
    return BackendServer(app, sock, quiet)


def _with_auth(app: FastAPI, settings: ServeSettings) -> FastAPI:
    if not settings.auth_password:
        raise TrainingError("HTTP basic auth needs a password (set the variable --auth-password-env names)")
    app.add_middleware(BasicAuth, user=settings.auth_user, password=settings.auth_password)
    return app


def load_predictor(model_dir: str | Path, **options) -> Predictor:
    """The Predictor of a model directory written by ``python -m training train``; ``options``
    go to ``Tagger.load`` (for this model and every version swapped in later)."""
    return Predictor(Tagger.load(model_dir, **options), model_version(model_dir), options)


def open_store(model_dir: str | Path, store_dir: str | Path) -> tuple[VersionStore, str]:
    """The version store and the version to serve: ``model_dir`` added to it (and made current),
    or, when ``model_dir`` is the store itself, its current version."""
    store = VersionStore(store_dir)
    if Path(model_dir).resolve() == store.root.resolve():
        version = store.current()
        if version is None:
            raise TrainingError(f"{store.root}: the store has no current version; serve a model directory")
        return store, version
    version = store.add(model_dir)
    store.set_current(version)
    return store, version
