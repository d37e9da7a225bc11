"""`bertfast serve` as a process: the helper the serve tests start servers with (a real process on a free
loopback port, real HTTP), and the command line's own checks: startup order, refused options, help."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

# Seconds a server may take to import torch, load its model and warm up on a busy 2-core machine.
STARTUP_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`python -m bertfast serve ARGS` on 127.0.0.1 and a free port; its log goes to a temporary file."""

    def __init__(self, *args: str, api_key: str | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
        extra = []
        if api_key:
            keys = tempfile.NamedTemporaryFile("w", suffix=".keys", delete=False)
            keys.write(f"\n{api_key}\nanother-key\n")
            keys.close()
            extra = ["--api-key-file", keys.name]
        cmd = [sys.executable, "-m", "bertfast", "serve", "--port", str(self.port), "--device", "cpu", *extra, *args]
        # One torch thread: the server shares the CI's two cores with the test's own client threads.
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env)

    def log(self) -> str:
        with open(self._log.name, encoding="utf-8", errors="replace") as f:
            return f.read()

    def wait_ready(self) -> ServerProcess:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/health", timeout=5).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"the server was not ready in {STARTUP_TIMEOUT_S} s:\n{self.log()}")

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=120, **kwargs)

    def rss_kib(self) -> int:
        with open(f"/proc/{self.proc.pid}/status", encoding="ascii") as f:
            return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(
                    f"the server did not stop within {timeout} s of signal {sig}:\n{self.log()}"
                ) from None
        return self.proc.returncode

    def close(self) -> None:
        try:
            self.stop()
        finally:
            os.unlink(self._log.name)


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bertfast", "serve", *args], capture_output=True, text=True, timeout=timeout
    )


def listening_addresses(port: int) -> set[str]:
    """The local IPv4 addresses a socket listens on at `port`, from the kernel's table."""
    found = set()
    with open("/proc/net/tcp", encoding="ascii") as f:
        for line in f.readlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            host, local_port = local.split(":")
            if state == "0A" and int(local_port, 16) == port:  # 0A: LISTEN
                found.add(socket.inet_ntoa(bytes.fromhex(host)[::-1]))
    return found


def test_logs_its_url_warms_up_answers_health_on_loopback_and_stops_with_sigint():
    server = ServerProcess("--max-batch-tokens", "4096")
    try:
        server.wait_ready()
        log = server.log()
        url_at = log.find(f"http://127.0.0.1:{server.port}")
        ready_at = log.find("ready")
        assert 0 <= url_at < ready_at, log
        if os.path.exists("/proc/net/tcp"):
            assert listening_addresses(server.port) == {"127.0.0.1"}, "the default host is loopback only"
        with server.client() as c:
            info = c.get("/info").json()
        assert info["max_batch_tokens"] == 4096 and info["devices"] == ["cpu"]
        assert info["model_type"] == "embedding" and info["dimension"] == 384 and info["max_input_length"] == 256
        assert server.stop(signal.SIGINT) == 0
    finally:
        server.close()


def test_a_bad_option_exits_1_naming_it_without_a_traceback():
    done = run_cli("--max-batch-tokens", "100", "--port", str(free_port()))
    assert done.returncode == 1, done.stderr
    assert "max-batch-tokens (100) must be at least the model's length limit (256)" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_limits_keys_devices_and_model_are_checked():
    from bertfast.serve.app import Limits
    from bertfast.serve.engine import load_model
    from bertfast.serve.server import check_limits, read_api_keys, resolve_devices

    with pytest.raises(ValueError, match=r"max-queue \(10\) must be at least max-inputs \(20\)"):
        check_limits(Limits(max_queue=10, max_inputs=20), 128)
    with pytest.raises(ValueError, match=r"max-batch-tokens \(100\) must be at least .* \(256\)"):
        check_limits(Limits(max_batch_tokens=100), 256)
    check_limits(Limits(max_batch_tokens=256), 256)
    with pytest.raises(ValueError, match="api-key-file: cannot read /nonexistent/keys"):
        read_api_keys("/nonexistent/keys")
    with tempfile.NamedTemporaryFile("w", suffix=".keys") as f:
        f.write("\n  \n")
        f.flush()
        with pytest.raises(ValueError, match="holds no key"):
            read_api_keys(f.name)
        f.write(" k1 \n\nk2\n")
        f.flush()
        assert read_api_keys(f.name) == ["k1", "k2"]
    assert resolve_devices("cpu") == ["cpu"]
    with pytest.raises(FileNotFoundError, match="model: /nonexistent/model is not a directory"):
        load_model("/nonexistent/model", ["cpu"], None)


def test_every_option_has_help():
    done = run_cli("--help", timeout=60)
    assert done.returncode == 0
    for option in (
        "--model",
        "--host",
        "--port",
        "--device",
        "--dtype",
        "--backend",
        "--max-batch-tokens",
        "--max-queue",
        "--max-inputs",
        "--max-body-bytes",
        "--max-wait-ms",
        "--api-key-file",
        "--log-level",
    ):
        # the option, its metavar or choices, then its help text (on the same line or the next)
        assert re.search(rf"^\s+{option}(?: [A-Z]+| \{{[^}}]*\}})?\s+[a-z]", done.stdout, re.M), (option, done.stdout)
