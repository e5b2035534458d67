"""Serve a trained model as a Label Studio ML backend: ``python -m training serve MODEL_DIR``.

Implements the documented ML backend protocol over the standard library's HTTP server:

- ``GET /health`` -> ``{"status": "UP", "model_class": ..., "model_version": ...}``
- ``POST /setup`` (project, schema, ...) -> ``{"model_version": ...}``
- ``POST /predict`` (``{"tasks": [...], "label_config": ...}``) -> ``{"results": [prediction per task]}``,
  each prediction ``{"model_version", "score", "result"}`` as ``push predictions`` writes them.
- ``POST /webhook`` (training events) -> acknowledged, nothing trained: train with
  ``python -m training train`` and serve the new model directory.

Connect it in Label Studio (project Settings -> Model -> Connect model, URL
``http://127.0.0.1:9090``) or with ``serve --connect PROJECT``. ``/setup`` also carries an
access token of the project's owner: it is never read, logged or stored here.
"""

from __future__ import annotations

import json
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from training.data.export import task_text
from training.errors import TrainingError
from training.inference.tagger import Tagger
from training.labelstudio.predictions import labeling_names, model_version, predict_texts

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9090
MAX_BODY_BYTES = 64 * 1024 * 1024


class Predictor:
    """The model behind the backend: one prediction at a time (torch inference is not re-entrant here)."""

    def __init__(self, tagger: Tagger, version: str) -> None:
        self.tagger = tagger
        self.version = version
        self._lock = threading.Lock()

    def predict(self, payload: dict) -> dict:
        """The ``/predict`` answer for a request body."""
        tasks = payload.get("tasks")
        if not isinstance(tasks, list):
            raise ValueError("the request has no 'tasks' list")
        names = labeling_names(payload.get("label_config"))
        texts = [task_text(task, names.text_field, allow_blank=True) for task in tasks]
        with self._lock:
            results = predict_texts(self.tagger, texts, names, self.version)
        return {"results": results, "model_version": self.version}


def make_handler(predictor: Predictor, quiet: bool = False) -> type[BaseHTTPRequestHandler]:
    """The request handler class bound to ``predictor``."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "training-ml-backend"

        def _send(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> dict:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                raise ValueError(f"request body over {MAX_BODY_BYTES} bytes")
            raw = self.rfile.read(length) if length else b"{}"
            body = json.loads(raw or b"{}")
            if not isinstance(body, dict):
                raise ValueError("the request body is not a JSON object")
            return body

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            path = self.path.split("?", 1)[0].rstrip("/")
            if path in ("/health", ""):
                self._send(
                    HTTPStatus.OK,
                    {"status": "UP", "model_class": "Tagger", "model_version": predictor.version},
                )
            elif path == "/versions":
                self._send(HTTPStatus.OK, {"versions": [predictor.version]})
            else:
                self._send(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint: {path}"})

        def do_POST(self) -> None:  # noqa: N802
            path = self.path.split("?", 1)[0].rstrip("/")
            try:
                body = self._body()
                if path == "/predict":
                    self._send(HTTPStatus.OK, predictor.predict(body))
                elif path == "/setup":
                    self._send(HTTPStatus.OK, {"model_version": predictor.version})
                elif path == "/webhook":
                    self._send(HTTPStatus.OK, {"status": "ignored: train with python -m training train"})
                else:
                    self._send(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint: {path}"})
            except (ValueError, TrainingError) as exc:
                self._send(HTTPStatus.BAD_REQUEST, {"error": str(exc)})

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
            # Method, path and status only (the default); request bodies are never logged.
            if not quiet:
                super().log_message(format, *args)

    return Handler


def make_server(
    predictor: Predictor, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, quiet: bool = False
) -> ThreadingHTTPServer:
    """A bound (not yet serving) HTTP server; port 0 picks a free port (see ``server_address``)."""
    try:
        server = ThreadingHTTPServer((host, port), make_handler(predictor, quiet))
    except OSError as exc:
        raise TrainingError(f"cannot listen on {host}:{port}: {exc.strerror}; use another --port") from None
    server.daemon_threads = True
    return server


def load_predictor(model_dir: str | Path) -> Predictor:
    """The Predictor of a model directory written by ``python -m training train``."""
    return Predictor(Tagger.load(model_dir), model_version(model_dir))


def serve(server: ThreadingHTTPServer) -> None:
    """Serve until interrupted (Ctrl-C), then close the socket."""
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        server.server_close()
