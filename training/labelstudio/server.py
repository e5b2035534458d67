"""A local Label Studio server for this project: start, stop and status.

The server (``label-studio==1.23.2``) lives in its own virtual environment, ``.labelstudio/venv``
(``make labelstudio``): it pins Django, pyarrow and the SDK, which would fight the training
environment. It runs as one process, bound to 127.0.0.1 only, with its data (SQLite database,
uploads, the PID file and the log) under ``.labelstudio/data`` (ignored by git).

It starts from a clean environment: the server also reads un-prefixed ``USERNAME``,
``PASSWORD``, ``HOST``, ``PORT`` and ``DEBUG`` from the caller's shell. The outbound version
check, telemetry and error reporting are off. A local user and a legacy API token are created
at the first start of a data dir; both are stored in ``credentials.json`` there (mode 0600) and
never printed. ``--debug`` is what makes a busy port an error instead of a silent move to the
next port; the server itself runs Django's ``runserver`` either way.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from training.errors import LabelStudioError
from training.files import write_atomically

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_VENV = PROJECT_ROOT / ".labelstudio" / "venv"
DEFAULT_DATA_DIR = PROJECT_ROOT / ".labelstudio" / "data"
DEFAULT_PORT = 8080
HOST = "127.0.0.1"
LOCAL_USERNAME = "annotator@localhost.localdomain"
# A cold start (new data dir: migrations) took 28-46 s on the project's 2-core machines.
START_TIMEOUT_S = 240.0
# Label Studio's own SSRF block list (label_studio/core/utils/io.py, 1.23.2) minus 127.0.0.0/8:
# the ML backend and its /webhook listen on loopback; private networks, link-local (cloud
# metadata) and the rest stay blocked.
SSRF_BANNED_SUBNETS = (
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "233.252.0.0/24",
    "240.0.0.0/4",
    "255.255.255.255/32",
    "::/128",
    "::1/128",
    "::ffff:0:0/96",
    "::ffff:0:0:0/96",
    "64:ff9b::/96",
    "64:ff9b:1::/48",
    "100::/64",
    "2001:0000::/32",
    "2001:20::/28",
    "2001:db8::/32",
    "2002::/16",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
)
# Label Studio 1.23's logging config gives the django logger a console handler and lets it
# propagate to the root logger's: every request line would be logged twice. The server's
# interpreter imports this sitecustomize (written into the data dir, on its PYTHONPATH), which
# turns that propagation off when Django applies the config.
SITECUSTOMIZE = """import logging.config

_dict_config = logging.config.dictConfig


def dictConfig(config):
    django = config.get("loggers", {}).get("django", {})
    if django.get("handlers"):
        django.setdefault("propagate", False)
    _dict_config(config)


logging.config.dictConfig = dictConfig
"""
STATE_FILE = "server.json"
DATABASE_FILE = "label_studio.sqlite3"
PROGRESS_EVERY_S = 10.0
CREDENTIALS_FILE = "credentials.json"
LOG_FILE = "server.log"


@dataclass(frozen=True)
class ServerState:
    """What ``start`` recorded about a running server (the PID file)."""

    pid: int
    port: int
    url: str
    data_dir: str
    log: str
    started_at: float


@dataclass(frozen=True)
class LocalCredentials:
    """The local user and its legacy API token; kept in the data dir, never printed."""

    username: str
    password: str
    token: str


def label_studio_executable(venv: Path = DEFAULT_VENV) -> Path:
    """The ``label-studio`` command of the server venv; a clear error if it is not installed."""
    executable = Path(venv) / "bin" / "label-studio"
    if not executable.is_file():
        raise LabelStudioError(
            f"{executable}: Label Studio is not installed; run `make labelstudio` (installs"
            " label-studio==1.23.2 into .labelstudio/venv)"
        )
    return executable


def local_credentials(data_dir: Path = DEFAULT_DATA_DIR, create: bool = False) -> LocalCredentials | None:
    """The data dir's local user and token (created, mode 0600, when ``create`` and missing)."""
    path = Path(data_dir) / CREDENTIALS_FILE
    if path.is_file():
        return LocalCredentials(**json.loads(path.read_text(encoding="utf-8")))
    if not create:
        return None
    # Django's token key is at most 40 characters.
    credentials = LocalCredentials(LOCAL_USERNAME, secrets.token_urlsafe(18), secrets.token_hex(20))

    def write_private(target: Path) -> None:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(asdict(credentials), handle)

    write_atomically(path, write_private)
    return credentials


def server_environment(data_dir: Path, credentials: LocalCredentials, venv: Path) -> dict[str, str]:
    """The whole environment of the server process: nothing inherited but a minimal PATH."""
    data_dir = Path(data_dir).resolve()
    return {
        "PATH": f"{Path(venv).resolve() / 'bin'}:/usr/bin:/bin",
        "HOME": str(data_dir),
        "LANG": "C.UTF-8",
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
        "XDG_CONFIG_HOME": str(data_dir / "xdg"),
        "LABEL_STUDIO_USERNAME": credentials.username,
        "LABEL_STUDIO_PASSWORD": credentials.password,
        "LABEL_STUDIO_USER_TOKEN": credentials.token,
        # A fixed token only works as a legacy token, enabled at the data dir's first start.
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
        # No outbound calls: PyPI version check, telemetry, Sentry (backend and frontend).
        "LABEL_STUDIO_LATEST_VERSION_CHECK": "false",
        "LABEL_STUDIO_COLLECT_ANALYTICS": "false",
        "LABEL_STUDIO_SENTRY_DSN": "",
        "LABEL_STUDIO_FRONTEND_SENTRY_DSN": "",
        # The ML backend (`python -m training serve`) listens on 127.0.0.1 too.
        "LABEL_STUDIO_ML_BLOCK_LOCAL_IP": "false",
        "LABEL_STUDIO_USE_DEFAULT_BANNED_SUBNETS": "false",
        "LABEL_STUDIO_USER_ADDITIONAL_BANNED_SUBNETS": ",".join(SSRF_BANNED_SUBNETS),
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": str(data_dir / "site"),
    }


def port_in_use(port: int, host: str = HOST) -> bool:
    """Whether something already listens on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        return probe.connect_ex((host, port)) == 0


def healthy(url: str, timeout: float = 2.0) -> bool:
    """Whether ``GET {url}/health`` answers 200."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _read_state(data_dir: Path) -> ServerState | None:
    path = Path(data_dir) / STATE_FILE
    if not path.is_file():
        return None
    try:
        return ServerState(**json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, TypeError):
        raise LabelStudioError(
            f"{path}: unreadable PID file; stop the server by hand and delete it"
        ) from None


def _write_state(data_dir: Path, state: ServerState) -> None:
    text = json.dumps(asdict(state), indent=1) + "\n"
    write_atomically(Path(data_dir) / STATE_FILE, lambda target: target.write_text(text, encoding="utf-8"))


def _is_our_process(state: ServerState) -> bool:
    """Whether ``state.pid`` is alive and still the label-studio process started for that data dir.

    PIDs are reused: checking the command line keeps ``stop`` from signalling a stranger.
    """
    try:
        cmdline = Path(f"/proc/{state.pid}/cmdline").read_bytes().split(b"\0")
        environ = Path(f"/proc/{state.pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    stat = Path(f"/proc/{state.pid}/stat").read_text().rsplit(")", 1)[-1].split()
    if stat and stat[0] == "Z":  # a zombie has exited; only its parent has not reaped it yet
        return False
    wanted = f"LABEL_STUDIO_BASE_DATA_DIR={state.data_dir}".encode()
    return any(b"label-studio" in part for part in cmdline) and wanted in environ


def status(data_dir: Path = DEFAULT_DATA_DIR) -> ServerState | None:
    """The running server of ``data_dir``, or None (a stale PID file is removed)."""
    state = _read_state(data_dir)
    if state is None:
        return None
    if not _is_our_process(state):
        (Path(data_dir) / STATE_FILE).unlink(missing_ok=True)
        return None
    return state


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start(
    port: int = DEFAULT_PORT,
    data_dir: Path = DEFAULT_DATA_DIR,
    venv: Path = DEFAULT_VENV,
    timeout: float = START_TIMEOUT_S,
    say: Callable[[str], None] | None = None,
) -> ServerState:
    """Start the server on 127.0.0.1:``port`` and wait until ``/health`` answers.

    Already running for this data dir on the same port: its state is returned unchanged. A busy
    port is an error, never a move to another port. ``say`` hears what is going on while the
    caller waits (a first start builds the database: 30-60 s on 2 cores).
    """
    say = say or (lambda message: None)
    data_dir = Path(data_dir).resolve()
    executable = label_studio_executable(venv)
    running = status(data_dir)
    if running is not None:
        if running.port != port:
            raise LabelStudioError(
                f"a server for {data_dir} already runs at {running.url} (pid {running.pid});"
                " stop it first (python -m training labelstudio stop)"
            )
        return running
    if port_in_use(port):
        raise LabelStudioError(
            f"port {port} on {HOST} is already in use; free it or choose another with --port"
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    credentials = local_credentials(data_dir, create=True)
    cold = not (data_dir / DATABASE_FILE).exists()
    (data_dir / "site").mkdir(exist_ok=True)
    (data_dir / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
    log_path = data_dir / LOG_FILE
    command = [
        str(executable),
        "start",
        "--no-browser",
        "--internal-host",
        HOST,
        "--port",
        str(port),
        "--debug",
    ]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            command,
            env=server_environment(data_dir, credentials, venv),
            cwd=data_dir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in the caller's terminal does not reach it
        )
    url = f"http://{HOST}:{port}"
    state = ServerState(process.pid, port, url, str(data_dir), str(log_path), time.time())
    _write_state(data_dir, state)
    if cold:
        say(f"starting Label Studio at {url}: first start of {data_dir}, creating its database (30-60 s)")
    else:
        say(f"starting Label Studio at {url} (a few seconds)")
    started = time.monotonic()
    deadline = started + timeout
    next_note = started + PROGRESS_EVERY_S
    while time.monotonic() < deadline:
        if time.monotonic() >= next_note:
            say(f"  still starting ({time.monotonic() - started:.0f} s; log: {log_path})")
            next_note += PROGRESS_EVERY_S
        if process.poll() is not None:
            (data_dir / STATE_FILE).unlink(missing_ok=True)
            raise LabelStudioError(
                f"Label Studio exited with code {process.returncode} while starting; the end of"
                f" {log_path}:\n{_log_tail(log_path)}"
            )
        if healthy(url):
            return state
        time.sleep(0.5)
    stop(data_dir)
    raise LabelStudioError(
        f"Label Studio did not answer {url}/health within {timeout:.0f} s; the end of {log_path}:\n"
        f"{_log_tail(log_path)}"
    )


def stop(data_dir: Path = DEFAULT_DATA_DIR, timeout: float = 20.0) -> ServerState | None:
    """Stop exactly the PID that ``start`` recorded (SIGTERM, then SIGKILL); None if none ran."""
    data_dir = Path(data_dir).resolve()
    state = status(data_dir)
    if state is None:
        return None
    os.kill(state.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _is_our_process(state):
        _reap(state.pid)
        time.sleep(0.2)
    if _is_our_process(state):
        os.kill(state.pid, signal.SIGKILL)
        _reap(state.pid, block=True)
    (data_dir / STATE_FILE).unlink(missing_ok=True)
    return state


def _reap(pid: int, block: bool = False) -> None:
    """Collect the exit status when the server is our own child (a test fixture's), else nothing."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0 if block else os.WNOHANG)
