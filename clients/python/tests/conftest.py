"""Real stockraft servers for the tests, started from $STOCKRAFT_BIN.

One single-member server serves the whole session (each test uses ids and
SKUs of its own, so tests do not see each other's stock); tests that need a
server set up differently (tokens, a cluster) start their own.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

# gRPC's own INFO lines (a GOAWAY from a server the tests stopped) are noise
# here; set before grpc is first imported.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import grpc  # noqa: E402
import pytest  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc

START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def binary() -> str:
    path = os.environ.get("STOCKRAFT_BIN")
    if not path or not os.access(path, os.X_OK):
        pytest.fail(f"STOCKRAFT_BIN must name the stockraft binary (got {path!r}); "
                    "build it with `cargo build --bin stockraft`", pytrace=False)
    return path


def health(address: str, service: str = "", timeout: float = 1.0) -> int | None:
    """The health status `address` reports for `service`, or None when it
    does not answer (down, or a service name it does not know)."""
    with grpc.insecure_channel(address) as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout)
            return answer.status
        except grpc.RpcError:
            return None


class Server:
    """One `stockraft serve` process on a loopback port."""

    def __init__(self, workdir: Path, port: int | None = None, extra: list[str] = ()):
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.workdir = workdir
        self.extra = list(extra)
        self.process: subprocess.Popen | None = None
        self.log_path = workdir / f"server-{self.port}.log"

    def start(self) -> "Server":
        args = [binary(), "serve", "--listen", self.address, "--data-dir", str(self.workdir / f"data-{self.port}"),
                "--metrics-listen", "off", *self.extra]
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        return self

    def wait_serving(self, timeout: float = START_TIMEOUT) -> "Server":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"stockraft exited with {self.process.returncode}:\n{self.log_tail()}")
            if health(self.address, timeout=0.5) == health_pb2.HealthCheckResponse.SERVING:
                return self
            time.sleep(0.05)
        raise RuntimeError(f"stockraft at {self.address} not SERVING after {timeout} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        if getattr(self, "log", None):
            self.log.close()


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("single")).start()
    try:
        yield srv.wait_serving()
    finally:
        srv.stop()


@pytest.fixture
def unique():
    """A fresh name per use, so tests share a server but not its stock."""
    tag = uuid.uuid4().hex[:10]
    return lambda prefix: f"{prefix}-{tag}"
