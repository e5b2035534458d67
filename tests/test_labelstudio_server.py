"""The local Label Studio server: a real one (session fixture) and PID-file handling with stand-ins."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from training.errors import LabelStudioError
from training.labelstudio import server as labelstudio_server


def _listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp*) of sockets listening on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A = LISTEN
                found.add(address)
    return found


def test_real_server_answers_on_loopback_only(label_studio):
    assert labelstudio_server.healthy(label_studio.url)
    assert _listening_addresses(label_studio.state.port) == {"0100007F"}  # 127.0.0.1 only


def test_real_server_runs_in_a_clean_environment_without_outbound_calls(label_studio):
    environ = dict(
        item.split("=", 1)
        for item in Path(f"/proc/{label_studio.state.pid}/environ").read_text().split("\0")
        if "=" in item
    )
    assert environ["LABEL_STUDIO_LATEST_VERSION_CHECK"] == "false"
    assert environ["LABEL_STUDIO_COLLECT_ANALYTICS"] == "false"
    assert environ["LABEL_STUDIO_SENTRY_DSN"] == ""
    assert environ["LABEL_STUDIO_BASE_DATA_DIR"] == label_studio.state.data_dir
    # Nothing leaks in from the caller (the server reads un-prefixed USERNAME, PORT, DEBUG...).
    assert not set(environ) & {"USERNAME", "USER", "PORT", "DEBUG", "HOST", "VIRTUAL_ENV"}
    # Its only PYTHONPATH is ours: the sitecustomize that logs each request once.
    assert environ["PYTHONPATH"] == str(Path(label_studio.state.data_dir) / "site")
    assert not [key for key in environ if key.startswith(("HF_", "PYTEST"))]


def test_a_cold_start_says_what_it_is_doing(label_studio):
    assert label_studio.said[0].startswith(f"starting Label Studio at {label_studio.url}: first start")
    assert "creating its database" in label_studio.said[0]


def test_every_request_is_logged_once(label_studio):
    import urllib.request
    import uuid

    probe = uuid.uuid4().hex
    urllib.request.urlopen(f"{label_studio.url}/health?probe={probe}", timeout=10).read()
    time.sleep(0.5)
    log = Path(label_studio.state.log).read_text(encoding="utf-8", errors="replace")
    assert log.count(probe) == 1


def test_token_is_kept_private_and_out_of_the_server_log(label_studio):
    credentials = Path(label_studio.state.data_dir) / labelstudio_server.CREDENTIALS_FILE
    assert credentials.stat().st_mode & 0o077 == 0
    assert label_studio.token not in Path(label_studio.state.log).read_text()


def test_start_again_returns_the_running_server_and_a_busy_port_is_an_error(label_studio, tmp_path):
    data_dir = Path(label_studio.state.data_dir)
    assert labelstudio_server.start(port=label_studio.state.port, data_dir=data_dir) == label_studio.state
    with pytest.raises(LabelStudioError, match=f"port {label_studio.state.port} .* already in use"):
        labelstudio_server.start(port=label_studio.state.port, data_dir=tmp_path)
    assert not (tmp_path / labelstudio_server.STATE_FILE).exists()
    with pytest.raises(LabelStudioError, match="already runs at"):
        labelstudio_server.start(port=label_studio.state.port + 1, data_dir=data_dir)


def test_missing_install_says_how_to_install(tmp_path):
    with pytest.raises(LabelStudioError, match="make labelstudio"):
        labelstudio_server.label_studio_executable(tmp_path / "no-venv")


def _stand_in(data_dir: Path, claims_data_dir: bool) -> subprocess.Popen:
    """A sleeping process whose command line says label-studio (and, optionally, its data dir)."""
    env = {"PATH": os.environ["PATH"]}
    if claims_data_dir:
        env["LABEL_STUDIO_BASE_DATA_DIR"] = str(data_dir)
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "label-studio"], env=env)


def _record(data_dir: Path, pid: int) -> None:
    state = labelstudio_server.ServerState(pid, 1, "http://127.0.0.1:1", str(data_dir), "log", time.time())
    (data_dir / labelstudio_server.STATE_FILE).write_text(json.dumps(state.__dict__))


def test_stop_ends_exactly_the_recorded_process(tmp_path):
    ours, stranger = _stand_in(tmp_path, True), _stand_in(tmp_path / "elsewhere", True)
    try:
        time.sleep(0.3)
        _record(tmp_path, ours.pid)
        assert labelstudio_server.stop(tmp_path).pid == ours.pid
        assert ours.wait(timeout=10) is not None
        assert stranger.poll() is None
        assert not (tmp_path / labelstudio_server.STATE_FILE).exists()
    finally:
        stranger.kill()
        ours.kill()
        stranger.wait()


def test_a_reused_pid_is_never_signalled(tmp_path):
    # The PID file names a live process that is not this data dir's server (a reused PID).
    stranger = _stand_in(tmp_path, claims_data_dir=False)
    try:
        time.sleep(0.3)
        _record(tmp_path, stranger.pid)
        assert labelstudio_server.status(tmp_path) is None
        assert labelstudio_server.stop(tmp_path) is None
        assert stranger.poll() is None
        assert not (tmp_path / labelstudio_server.STATE_FILE).exists()  # the stale file is gone
    finally:
        stranger.kill()
        stranger.wait()
