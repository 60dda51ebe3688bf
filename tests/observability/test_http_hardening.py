"""The HTTP server cannot hurt trading, through the real ``tradebot run``.

- a flood of idle connections is capped and timed out: the bot keeps its file
  descriptors, keeps trading and is not HALTed; its open-file soft limit is raised to
  the hard one at start;
- any malformed credential is 401 (a non-UTF-8 ``Authorization`` was a 500);
- a non-loopback bind without a token, and a port already in use, stop ``run`` (exit 2)
  and fail ``--dry-run`` with a clear message.
"""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tb(*args: str, cwd: Path, timeout: float = 90, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tradebot", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        **kw,  # type: ignore[arg-type]
    )


def get(url: str, timeout: float = 3.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def raw_request(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks):
                break
    return b"".join(chunks)


def _low_fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (128, 256))


@pytest.mark.timeout(120)
def test_idle_connection_flood_cannot_starve_or_halt_trading(tmp_path: Path) -> None:
    port = free_port()
    cfg = tmp_path / "tradebot.toml"
    # idle connections live 4 s: the flood below must still hold every slot when the extra
    # connection tries, however long a loaded machine takes to open 600 sockets
    cfg.write_text(f'[bot]\nstate_dir = "state"\n\n[http]\nport = {port}\nidle_timeout_s = 4.0\n')
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))  # this test's own sockets
    proc = subprocess.Popen(
        [sys.executable, "-m", "tradebot", "run", "--paper", "--duration", "20", "--config", str(cfg)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_low_fd_limit,
    )
    socks: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            try:
                if get(f"http://127.0.0.1:{port}/healthz", timeout=1) == 200:
                    break
            except OSError:
                time.sleep(0.2)
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
        line = next(ln for ln in limits.splitlines() if ln.startswith("Max open files"))
        assert line.split()[3:5] == ["256", "256"], line  # soft raised to hard at start
        fd_dir = Path(f"/proc/{proc.pid}/fd")
        baseline = len(os.listdir(fd_dir))
        # 600 idle connections: more than the bot's whole open-file limit
        for _ in range(600):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            socks.append(s)
        time.sleep(0.5)
        held = len(os.listdir(fd_dir))
        assert held <= baseline + 32 + 4, (baseline, held)  # capped at an eighth of the limit
        # while the cap is reached, a new connection is closed at once
        with pytest.raises((ConnectionResetError, BrokenPipeError, AssertionError)):
            assert raw_request(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n") != b""
        for s in socks:
            s.close()
        socks.clear()
        deadline = time.monotonic() + 10  # the server lets go of every one of them
        while len(os.listdir(fd_dir)) > baseline + 4 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(os.listdir(fd_dir)) <= baseline + 4
        assert get(f"http://127.0.0.1:{port}/healthz") == 200
        for header in (
            b"Authorization: Bearer \xff\xfe\x80\r\n",
            b"Authorization: \xc3\x28\r\n",
            b"Authorization: Basic\r\n",
        ):
            answer = raw_request(
                port, b"POST /halt HTTP/1.1\r\nHost: x\r\n" + header + b"Content-Length: 0\r\n\r\n"
            )
            assert answer.startswith((b"HTTP/1.1 401", b"HTTP/1.1 403")), answer[:200]
        out, err = proc.communicate(timeout=60)
    finally:
        for s in socks:
            s.close()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert proc.returncode == 0, out + err[-3000:]
    assert "run finished" in out and "trading state active" in out, out
    assert "Too many open files" not in err and "Internal Server Error" not in err


def test_malformed_credentials_get_401_with_a_token_configured(tmp_path: Path) -> None:
    """With a control token set, every malformed Authorization header is 401 (not 500)."""
    port = free_port()
    cfg = tmp_path / "tradebot.toml"
    cfg.write_text(
        f'[bot]\nstate_dir = "state"\n\n[http]\nport = {port}\nidle_timeout_s = 1.0\nrequest_timeout_s = 0.5\n'
    )
    env = {**os.environ, "TRADEBOT_CONTROL_TOKEN": "the-control-token"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tradebot", "run", "--paper", "--duration", "20", "--config", str(cfg)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            try:
                if get(f"http://127.0.0.1:{port}/healthz", timeout=1) == 200:
                    break
            except OSError:
                time.sleep(0.2)
        for header in (
            b"Authorization: Bearer \xff\xfe\x80\r\n",
            b"Authorization: Bearer the-control-token\xff\r\n",
            b"Authorization: \xc3\x28 x\r\n",
            b"Authorization: Bearer\r\n",
            b"Authorization: Bearer  \r\n",
        ):
            answer = raw_request(
                port, b"POST /halt HTTP/1.1\r\nHost: x\r\n" + header + b"Content-Length: 0\r\n\r\n"
            )
            assert answer.startswith(b"HTTP/1.1 401"), (header, answer[:300])
        # a body that never arrives: 408 after request_timeout_s, and nothing changes
        started = time.monotonic()
        answer = raw_request(
            port,
            b"POST /halt HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer the-control-token\r\n"
            b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"rea',
        )
        assert answer.startswith(b"HTTP/1.1 408"), answer[:300]
        assert time.monotonic() - started < 5
        # a connection that sends nothing is closed after idle_timeout_s
        with socket.create_connection(("127.0.0.1", port), timeout=10) as idle:
            started = time.monotonic()
            with contextlib.suppress(ConnectionResetError):
                assert idle.recv(1) == b""
            assert 0.8 < time.monotonic() - started < 5
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=60)
    assert "trading state active" in out, out + err[-2000:]


def test_non_loopback_bind_without_a_token_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "tradebot.toml"
    cfg.write_text('[bot]\nstate_dir = "state"\n\n[http]\nhost = "0.0.0.0"\nport = 0\n')
    check = tb("config", "check", "--config", str(cfg), cwd=tmp_path)
    assert check.returncode == 2, check.stdout + check.stderr
    assert (
        "reachable from other hosts, without a control token" in check.stderr
        and "@ $.http.host" in check.stderr
    )
    run = tb("run", "--paper", "--duration", "3", "--config", str(cfg), cwd=tmp_path)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "reachable from other hosts" in run.stdout + run.stderr and "run finished" not in run.stdout
    dry = tb("run", "--paper", "--dry-run", "--config", str(cfg), cwd=tmp_path)
    assert dry.returncode == 1 and "[FAIL] setup" in dry.stdout and "reachable from other hosts" in dry.stdout


def test_port_in_use_fails_run_and_dry_run(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = tmp_path / "tradebot.toml"
        cfg.write_text(f'[bot]\nstate_dir = "state"\n\n[http]\nport = {port}\n')
        run = tb("run", "--paper", "--duration", "3", "--config", str(cfg), cwd=tmp_path)
        assert run.returncode == 2, run.stdout + run.stderr
        text = run.stdout + run.stderr
        assert f"cannot listen on 127.0.0.1:{port}" in text and "[http] port" in text
        assert "run finished" not in run.stdout and "nothing was traded" in run.stdout
        dry = tb("run", "--paper", "--dry-run", "--config", str(cfg), cwd=tmp_path)
        assert dry.returncode == 1, dry.stdout + dry.stderr
        assert "[FAIL] http server" in dry.stdout and f"127.0.0.1:{port}" in dry.stdout
