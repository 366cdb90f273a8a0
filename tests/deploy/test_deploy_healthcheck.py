"""``python -m mesos_stateful.common.healthcheck``, the probe of the Compose health checks: exit 0
only for a SERVING gRPC health answer or a 2xx HTTP answer, else 1 with the reason on stderr."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from mesos_stateful.testing.ports import free_port


def probe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mesos_stateful.common.healthcheck", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.fixture
def health_server() -> Iterator[tuple[str, health.HealthServicer]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        server.stop(None)


def test_grpc_probe(health_server: tuple[str, health.HealthServicer]) -> None:
    address, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    assert probe("grpc", address).returncode == 0
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    answer = probe("grpc", address)
    assert answer.returncode == 1 and "NOT_SERVING" in answer.stderr
    answer = probe("grpc", address, "--service", "nope")
    assert answer.returncode == 1 and "NOT_FOUND" in answer.stderr


def test_grpc_probe_nothing_listening() -> None:
    address = f"127.0.0.1:{free_port()}"
    answer = probe("--timeout", "1", "grpc", address)
    assert answer.returncode == 1 and "UNAVAILABLE" in answer.stderr


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health" else 503)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_http_probe() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        assert probe("http", f"{base}/health").returncode == 0
        answer = probe("http", f"{base}/other")
        assert answer.returncode == 1 and "HTTP 503" in answer.stderr
    finally:
        server.shutdown()
        server.server_close()
