"""CPU time per request of tracing's propagation alone, in one process, away from a suite's noise.

    .venv/bin/python bench/tracing_hops.py off          # no tracing
    .venv/bin/python bench/tracing_hops.py on           # STATEFUL_TRACES_DIR set: trace_context installed
    .venv/bin/python bench/tracing_hops.py server-only  # tracing set up, channels not wrapped
    .venv/bin/python bench/tracing_hops.py setup-only   # tracing set up, then trace_context.uninstall()
    .venv/bin/python bench/tracing_hops.py off --metadata   # off, but a traceparent sent on A -> B

A request: a client calls server A (``/t.A/Get``), whose handler calls server B (``/t.B/Get``)
twice: the shape of the gateway's ``GetInstance`` (gateway -> state ``Get`` + ``List``), with
trivial handlers. 8 concurrent loops; prints the process's CPU time (user + system,
``time.process_time``) per request, in microseconds, for ``--repeats`` runs of ``--requests``
requests after a warm-up, and their minimum (the least disturbed by other load). Default sampling
(1 % of roots) unless ``OTEL_TRACES_SAMPLER`` is set. Spans go to a temporary folder.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from typing import Any

import grpc

MODES = ("off", "on", "server-only", "setup-only")
TRACEPARENT = ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00")


def setup(mode: str) -> None:
    if mode == "off":
        return
    os.environ["STATEFUL_TRACES_DIR"] = tempfile.mkdtemp(prefix="tracing-hops-")
    from mesos_stateful.common import trace_context
    from mesos_stateful.common.tracing import setup_tracing

    setup_tracing("tracing-hops")
    if mode == "setup-only":
        trace_context.uninstall()
    elif mode == "server-only":
        aio: Any = grpc.aio
        aio.insecure_channel = trace_context._originals["insecure_channel"]


async def measure(requests: int, repeats: int, metadata: bool) -> list[float]:
    async def b_handler(request: bytes, context: Any) -> bytes:
        return b"b"

    b = grpc.aio.server()
    b_methods: dict[str, Any] = {"Get": grpc.unary_unary_rpc_method_handler(b_handler)}
    b.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.B", b_methods),))
    b_port = b.add_insecure_port("127.0.0.1:0")
    await b.start()
    to_b = grpc.aio.insecure_channel(f"127.0.0.1:{b_port}")
    call_b: Any = to_b.unary_unary("/t.B/Get")
    extra = (TRACEPARENT,) if metadata else None

    async def a_handler(request: bytes, context: Any) -> bytes:
        await call_b(b"x", metadata=extra)
        await call_b(b"y", metadata=extra)
        return b"a"

    a = grpc.aio.server()
    a_methods: dict[str, Any] = {"Get": grpc.unary_unary_rpc_method_handler(a_handler)}
    a.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.A", a_methods),))
    a_port = a.add_insecure_port("127.0.0.1:0")
    await a.start()
    to_a = grpc.aio.insecure_channel(f"127.0.0.1:{a_port}")
    call_a: Any = to_a.unary_unary("/t.A/Get")

    async def loop(n: int) -> None:
        for _ in range(n):
            await call_a(b"q")

    await asyncio.gather(*(loop(200) for _ in range(8)))  # warm-up
    per_request: list[float] = []
    for _ in range(repeats):
        started = time.process_time()
        await asyncio.gather(*(loop(requests // 8) for _ in range(8)))
        per_request.append((time.process_time() - started) / (requests // 8 * 8) * 1e6)
    await to_a.close()
    await to_b.close()
    await a.stop(None)
    await b.stop(None)
    return per_request


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=MODES)
    p.add_argument("--metadata", action="store_true", help="send a (not sampled) traceparent on A -> B")
    p.add_argument("--requests", type=int, default=4000, help="requests per repeat (default 4000)")
    p.add_argument("--repeats", type=int, default=3, help="repeats (default 3)")
    args = p.parse_args()
    setup(args.mode)
    runs = asyncio.run(measure(args.requests, args.repeats, args.metadata))
    label = args.mode + (" --metadata" if args.metadata else "")
    print(f"{label}: CPU us per request {[round(r) for r in runs]}, min {min(runs):.0f}")
    if args.mode != "off":
        from mesos_stateful.common.tracing import shutdown_tracing

        shutdown_tracing()
    return 0


if __name__ == "__main__":
    sys.exit(main())
