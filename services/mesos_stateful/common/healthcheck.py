"""A health probe for container health checks (Compose ``healthcheck.test``, Docker ``HEALTHCHECK``).

``python -m mesos_stateful.common.healthcheck grpc HOST:PORT [--service NAME]`` asks the standard
gRPC health service (``grpc.health.v1.Health/Check``, served by every service of the suite, see
``common.server``) and exits 0 only when the answer is SERVING.
``python -m mesos_stateful.common.healthcheck http URL`` exits 0 when a GET of URL answers 2xx (the
local cluster's master and agents serve ``/health``).
Anything else exits 1 with one line saying why (Docker keeps it in ``docker inspect`` 's health log).
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request
from typing import Any


def check_grpc(address: str, service: str = "", timeout: float = 2.0) -> str | None:
    """None when ``address`` answers SERVING for ``service``, else why not."""
    # Imported here: a probe runs every few seconds in every container, an HTTP one needs no gRPC.
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    try:
        with grpc.insecure_channel(address) as channel:
            # The typeshed stubs of HealthStub declare no methods.
            stub: Any = health_pb2_grpc.HealthStub(channel)
            answer = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    except grpc.RpcError as error:
        code = error.code() if isinstance(error, grpc.Call) else None
        details = error.details() if isinstance(error, grpc.Call) else str(error)
        return f"{address}: health check failed: {code.name if code else 'error'}: {details}"
    if answer.status != health_pb2.HealthCheckResponse.SERVING:
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
        return f"{address}: {status}"
    return None


def check_http(url: str, timeout: float = 2.0) -> str | None:
    """None when a GET of ``url`` answers 2xx, else why not."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status = int(response.status)
    except urllib.error.HTTPError as error:
        return f"{url}: HTTP {error.code}"
    except (OSError, ValueError) as error:
        return f"{url}: {error}"
    return None if 200 <= status < 300 else f"{url}: HTTP {status}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mesos_stateful.common.healthcheck", description=__doc__)
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for the answer")
    kinds = parser.add_subparsers(dest="kind", required=True)
    grpc_parser = kinds.add_parser("grpc", help="gRPC health service: exit 0 when SERVING")
    grpc_parser.add_argument("address", help="host:port")
    grpc_parser.add_argument("--service", default="", help="service name (default: the server as a whole)")
    http_parser = kinds.add_parser("http", help="HTTP GET: exit 0 on 2xx")
    http_parser.add_argument("url")
    args = parser.parse_args(argv)
    if args.kind == "grpc":
        problem = check_grpc(args.address, args.service, args.timeout)
    else:
        problem = check_http(args.url, args.timeout)
    if problem:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
