"""W&B never stops the science: an unreachable server or a rejected key falls back to offline logging, while
online asked for by name that cannot work, and a W&B directory that cannot be written, are refused (exit 2)
before training.

The fit runs are the real CLI in subprocesses with an environment of their own (no W&B variables of the
machine, HOME in a temporary folder so no ``~/.netrc`` or W&B settings file is read) against servers on
127.0.0.1: a closed port and a local HTTP server that answers 401. Nothing here leaves the machine.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lightning_grok.config import ConfigError, load_config
from lightning_grok.wandb_logger import PROBE_TIMEOUT, probe_server, resolve_mode

REPO = Path(__file__).resolve().parents[1]
FAKE_KEY = "0123456789abcdef" * 2 + "01234567"  # 40 hex digits: the shape of a real key, known to no server
TINY = ["model.width=50", "data.n_train=10", "trainer.max_steps=200", "trainer.progress_bar=false"]
FALLBACK_WITHIN = 30.0  # seconds from process start to "logging offline" (the bound)
RUN_TIMEOUT = 180


def isolated_env(home: Path, **extra: str) -> dict[str, str]:
    """The machine's environment minus every W&B variable, with HOME (so ~/.netrc) and NETRC in ``home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    home.mkdir(parents=True, exist_ok=True)
    env.update(HOME=str(home), NETRC=str(home / ".netrc"), WANDB_SILENT="true", **extra)
    return env


def closed_port() -> int:
    """A 127.0.0.1 port nobody listens on (bound, then released): connections are refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Answer(BaseHTTPRequestHandler):
    """GraphQL endpoint stand-in: answers every POST with ``status`` and ``body`` (set on the server)."""

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.requests.append(self.headers.get("Authorization"))
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(self.server.body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    srv.status, srv.body, srv.requests = 401, b'{"errors": [{"message": "user is not logged in"}]}', []
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def url_of(srv: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{srv.server_port}"


def run_fit(out: Path, env: dict, *overrides: str) -> tuple[int, list[tuple[float, str]], float]:
    """``lightning-grok fit`` on a tiny ridge run: (exit status, [(seconds since start, line)], total seconds)."""
    cmd = [sys.executable, "-m", "lightning_grok", "fit", "configs/ridge.yaml", *TINY, f"output_dir={out}", *overrides]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        for line in proc.stdout:
            lines.append((time.monotonic() - t0, line.rstrip("\n")))
        status = proc.wait(timeout=RUN_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return status, lines, time.monotonic() - t0


def text(lines: list[tuple[float, str]]) -> str:
    return "\n".join(line for _, line in lines)


def assert_fell_back_offline(status: int, lines: list, total: float, out: Path, why: str) -> None:
    shown = text(lines)
    assert status == 0, shown
    ours = [(t, line) for t, line in lines if line.startswith("lightning-grok: warning")]
    assert len(ours) == 1, shown  # one warning line, not a traceback or a retry log
    at, warning = ours[0]
    assert why in warning and "logging offline" in warning, warning
    assert f"wandb sync {out / 'wandb'}/offline-run-*" in warning, warning
    assert at < FALLBACK_WITHIN, f"fell back after {at:.1f} s (imports included)"
    assert total < 3 * FALLBACK_WITHIN, f"the run took {total:.1f} s"
    assert "Traceback" not in shown
    assert list((out / "wandb").glob("offline-run-*")), "an offline W&B run to sync later"
    assert (out / "phases.json").is_file(), "the run trained"


# ---- auto mode: the science goes on ------------------------------------------------------------------
@pytest.mark.slow
def test_unreachable_server_falls_back_to_offline(tmp_path: Path):
    url = f"http://127.0.0.1:{closed_port()}"
    env = isolated_env(tmp_path / "home", WANDB_API_KEY=FAKE_KEY, WANDB_BASE_URL=url)
    out = tmp_path / "run"
    status, lines, total = run_fit(out, env)  # wandb.mode=auto (the config's default): a key means online
    assert_fell_back_offline(status, lines, total, out, f"W&B server {url} unreachable")


@pytest.mark.slow
def test_rejected_key_falls_back_to_offline(tmp_path: Path, server: ThreadingHTTPServer):
    env = isolated_env(tmp_path / "home", WANDB_API_KEY=FAKE_KEY, WANDB_BASE_URL=url_of(server))
    out = tmp_path / "run"
    status, lines, total = run_fit(out, env, "wandb.mode=auto")
    assert_fell_back_offline(status, lines, total, out, "rejected the API key (HTTP 401)")
    assert server.requests and all(auth and auth.startswith("Basic ") for auth in server.requests)


# ---- refused before training: exit 2, a message, no traceback ----------------------------------------
def assert_refused(status: int, lines: list, out: Path, *words: str) -> None:
    shown = text(lines)
    assert status == 2, shown
    assert "Traceback" not in shown
    errors = [line for _, line in lines if line.startswith("lightning-grok: error:")]
    assert len(errors) == 1 and all(w in errors[0] for w in words), shown
    assert not (out / "phases.json").exists() and not list(out.glob("checkpoints/*.ckpt")), "nothing trained"


@pytest.mark.slow
def test_online_by_name_without_credentials_exits_2(tmp_path: Path):
    env = isolated_env(tmp_path / "home")  # no key, and HOME/NETRC point at an empty folder: no ~/.netrc
    out = tmp_path / "run"
    status, lines, _ = run_fit(out, env, "wandb.mode=online")
    assert_refused(status, lines, out, "wandb.mode", "no W&B credentials", "wandb login")


def mount_read_only(where: Path, request) -> None:
    """Mount an empty read-only tmpfs on ``where``: not writable even by root (skips where mounting is refused)."""
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(where)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    request.addfinalizer(lambda: subprocess.run(["umount", str(where)], check=False))


@pytest.mark.slow
@pytest.mark.parametrize("how", ["WANDB_DIR under a file", "output_dir/wandb read-only"])
def test_unwritable_wandb_dir_exits_2_before_training(how: str, tmp_path: Path, request):
    out = tmp_path / "run"
    extra = {}
    if how == "WANDB_DIR under a file":
        (tmp_path / "a-file").write_text("")
        extra["WANDB_DIR"] = str(tmp_path / "a-file" / "wandb-dir")  # no one, root included, can create it
    else:
        (out / "wandb").mkdir(parents=True)  # the run directory itself stays writable
        mount_read_only(out / "wandb", request)
    env = isolated_env(tmp_path / "home", **extra)
    status, lines, _ = run_fit(out, env, "wandb.mode=offline")
    assert_refused(status, lines, out, "W&B directory", "cannot be written", "WANDB_DIR")


# ---- the probe and the mode rules, in-process (no training) ------------------------------------------
def test_probe_tells_unreachable_from_rejected_from_accepted(server: ThreadingHTTPServer):
    assert probe_server(f"http://127.0.0.1:{closed_port()}", FAKE_KEY).startswith("unreachable (")
    assert probe_server(url_of(server), FAKE_KEY) == "rejected the API key (HTTP 401)"
    server.status, server.body = 200, b'{"data": {"viewer": null}}'
    assert probe_server(url_of(server), FAKE_KEY).startswith("rejected the API key")
    server.status, server.body = 200, b'{"data": {"viewer": {"id": "VXNlcjox"}}}'
    assert probe_server(url_of(server), FAKE_KEY) is None
    server.status = 502
    assert probe_server(url_of(server), FAKE_KEY).startswith("unreachable (HTTP 502")


def test_probe_of_a_silent_server_ends_on_time():
    """A server that accepts the connection and never answers (a black hole) costs the timeout, no more."""
    assert PROBE_TIMEOUT + 2 < FALLBACK_WITHIN - 15  # the probe's worst case leaves room for imports
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        t0 = time.monotonic()
        why = probe_server(f"http://127.0.0.1:{silent.getsockname()[1]}", FAKE_KEY, timeout=1.0)
        assert why.startswith("unreachable") and time.monotonic() - t0 < 3.5


def test_online_by_name_with_a_rejected_key_is_a_config_error(
    tmp_path: Path, server: ThreadingHTTPServer, monkeypatch, capsys
):
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("WANDB_BASE_URL", url_of(server))
    cfg = load_config(REPO / "configs" / "ridge.yaml", ["wandb.mode=online"])
    with pytest.raises(ConfigError, match=r"wandb\.mode=online but the W&B server .* rejected the API key"):
        resolve_mode(cfg, tmp_path)
    cfg = load_config(REPO / "configs" / "ridge.yaml", ["wandb.mode=auto"])
    monkeypatch.setenv("WANDB_MODE", "online")  # online by name through the environment: refused too
    with pytest.raises(ConfigError, match="WANDB_MODE=online"):
        resolve_mode(cfg, tmp_path)
    monkeypatch.delenv("WANDB_MODE")
    assert resolve_mode(cfg, tmp_path) == "offline"  # inferred from the key: falls back
    assert capsys.readouterr().err.count("lightning-grok: warning") == 1
