"""An HTTP proxy between a framework (pymesos) and the local cluster's master that records, as they
arrive on the wire, every v1 scheduler call (raw body and Content-Type) and every event of the
SUBSCRIBE streams it relays (RecordIO records, JSON). Everything else is passed through unchanged,
streams chunk by chunk. It runs on its own thread and event loop: pymesos' calls are blocking HTTP
requests made from the framework's threads, so they must not depend on the test's loop."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

Json = dict[str, Any]

# Hop-by-hop headers (RFC 9110 7.6.1) and those aiohttp sets itself.
_SKIP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "host",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
}


@dataclass(frozen=True)
class RecordedCall:
    """A POST /api/v1/scheduler as it arrived: its body, Content-Type and the master's status."""

    content_type: str | None
    body: bytes
    status: int

    @property
    def json(self) -> Json:
        value: Json = json.loads(self.body)
        return value

    @property
    def type(self) -> str:
        return str(self.json.get("type", ""))


class RecordIOReader:
    """Splits a RecordIO byte stream (``<length>\\n<record>``) into records."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        records: list[bytes] = []
        while True:
            newline = self._buffer.find(b"\n")
            if newline < 0:
                return records
            size = int(self._buffer[:newline])
            end = newline + 1 + size
            if len(self._buffer) < end:
                return records
            records.append(self._buffer[newline + 1 : end])
            self._buffer = self._buffer[end:]


class CallRecorder:
    """``start()`` listens on a free port of 127.0.0.1 (``address``: point the framework there) and
    forwards to ``master`` (``host:port``). ``calls`` and ``events`` keep the last ``limit`` of each."""

    def __init__(self, master: str, limit: int = 20000) -> None:
        self.master = master
        self.calls: deque[RecordedCall] = deque(maxlen=limit)
        self.events: deque[Json] = deque(maxlen=limit)
        self.port = 0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="call-recorder", daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def recorded(self) -> list[RecordedCall]:
        with self._lock:
            return list(self.calls)

    def recorded_events(self) -> list[Json]:
        with self._lock:
            return list(self.events)

    def start(self) -> None:
        self._thread.start()
        self._run(self._start())

    def stop(self) -> None:
        try:
            self._run(self._stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    def _run(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(30)

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10), auto_decompress=False
        )
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _SKIP}
        url = f"http://{self.master}{request.rel_url}"
        scheduler_call = request.method == "POST" and request.path == "/api/v1/scheduler"
        async with self._session.request(
            request.method, url, data=body, headers=headers, allow_redirects=False
        ) as upstream:
            if scheduler_call:
                with self._lock:
                    self.calls.append(
                        RecordedCall(request.headers.get("Content-Type"), body, upstream.status)
                    )
            out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _SKIP}
            if "Content-Length" in upstream.headers:
                return web.Response(status=upstream.status, headers=out_headers, body=await upstream.read())
            response = web.StreamResponse(status=upstream.status, headers=out_headers)
            response.enable_chunked_encoding()
            await response.prepare(request)
            reader = RecordIOReader()
            json_stream = upstream.headers.get("Content-Type", "").startswith("application/json")
            try:
                async for chunk in upstream.content.iter_any():
                    if scheduler_call and json_stream:
                        for record in reader.feed(chunk):
                            with self._lock:
                                self.events.append(json.loads(record))
                    await response.write(chunk)
                await response.write_eof()
            except (ConnectionResetError, aiohttp.ClientPayloadError):
                pass  # the framework or the master closed the stream: closing the other side ends it
            return response
