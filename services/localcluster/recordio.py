"""RecordIO event streams over chunked HTTP (``<length>\\n<json>``), as Mesos streams events."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

Json = dict[str, Any]


def encode(event: Json) -> bytes:
    data = json.dumps(event).encode()
    return str(len(data)).encode() + b"\n" + data


class EventStream:
    """One subscriber's stream; ``send`` never blocks (callers run inside HTTP handlers whose
    clients may be blocked on us: pymesos calls back from its reader thread)."""

    def __init__(self, stream_id: str = "") -> None:
        self.stream_id = stream_id
        self._queue: asyncio.Queue[Json | None] = asyncio.Queue()
        self.closed = False  # closed by us (not by the client)
        self.gone = False  # the client went away

    def send(self, event: Json) -> None:
        if not self.closed and not self.gone:
            self._queue.put_nowait(event)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._queue.put_nowait(None)

    async def serve(
        self,
        request: web.Request,
        first: Json,
        heartbeat: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> web.StreamResponse:
        """Stream events until closed by us or by the client. Returns the finished response."""
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json", **(headers or {})})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        next_beat = time.monotonic() + (heartbeat or 1e9)
        try:
            await resp.write(encode(first))
            while True:
                transport = request.transport
                if transport is None or transport.is_closing():
                    break
                event: Json | None
                try:
                    # asyncio.timeout, not wait_for (3.11's can swallow a cancellation).
                    async with asyncio.timeout(0.25):
                        event = await self._queue.get()
                except TimeoutError:
                    event = {}
                if event is None:
                    break
                if event:
                    await resp.write(encode(event))
                if heartbeat and time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + heartbeat
                    await resp.write(encode({"type": "HEARTBEAT"}))
        except asyncio.CancelledError:
            self.gone = not self.closed
            raise
        except (ConnectionError, RuntimeError) as error:
            log.debug("stream %s ended: %r", self.stream_id, error)
        if not self.closed:
            self.gone = True
        return resp
