"""RecordIO event streams over chunked HTTP (``<length>\\n<record>``), as Mesos streams events: a
record is the event's JSON, or its serialized protobuf ``Event`` when the subscriber accepted
``application/x-protobuf`` (``StreamingHttpConnection`` in ``src/common/http.hpp``)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from aiohttp import web
from google.protobuf.message import Message

from mesos_stateful.localcluster import encoding

log = logging.getLogger(__name__)

Json = dict[str, Any]


def frame(data: bytes) -> bytes:
    """One RecordIO record: the length in bytes, a newline, the data."""
    return str(len(data)).encode() + b"\n" + data


def encode(event: Json) -> bytes:
    return frame(json.dumps(event).encode())


def method_not_allowed(method: str, allowed: tuple[str, ...] = ("POST",)) -> web.Response:
    """libprocess' ``MethodNotAllowed(allowed, method)`` (``process/http.hpp``)."""
    listed = "', '".join(allowed)
    return web.Response(
        status=405,
        headers={"Allow": ", ".join(allowed)},
        text=f"405 Method Not Allowed. Expecting one of {{ '{listed}' }}, but received '{method}'.",
    )


class EventStream:
    """One subscriber's stream; ``send`` never blocks (callers run inside HTTP handlers whose
    clients may be blocked on us: pymesos calls back from its reader thread)."""

    def __init__(
        self, stream_id: str = "", media_type: str = encoding.JSON, message: type[Message] | None = None
    ) -> None:
        """``media_type``: of the records (``encoding.JSON`` or ``encoding.PROTOBUF``); ``message``:
        the ``Event`` class a protobuf record is serialized as."""
        if media_type == encoding.PROTOBUF and message is None:
            raise ValueError("a protobuf stream needs its Event message class")
        self.stream_id = stream_id
        self.media_type = media_type
        self.message = message
        self._queue: asyncio.Queue[Json | None] = asyncio.Queue()
        self.closed = False  # closed by us (not by the client)
        self.gone = False  # the client went away

    def send(self, event: Json) -> None:
        if not self.closed and not self.gone:
            self._queue.put_nowait(event)

    def record(self, event: Json) -> bytes | None:
        """The RecordIO record of ``event`` in the stream's media type; None (logged) for an event
        its protobuf ``Event`` cannot hold: a bug of the sender, not a reason to end the stream."""
        if self.media_type == encoding.PROTOBUF and self.message is not None:
            try:
                return frame(encoding.encode(event, self.message, encoding.PROTOBUF))
            except ValueError:
                log.exception("stream %s: event not sent, it is not a %s", self.stream_id, self.message)
                return None
        return encode(event)

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
        resp = web.StreamResponse(status=200, headers={"Content-Type": self.media_type, **(headers or {})})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        next_beat = time.monotonic() + (heartbeat or 1e9)
        try:
            if (data := self.record(first)) is not None:
                await resp.write(data)
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
                if event and (data := self.record(event)) is not None:
                    await resp.write(data)
                if heartbeat and time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + heartbeat
                    if (data := self.record({"type": "HEARTBEAT"})) is not None:
                        await resp.write(data)
        except asyncio.CancelledError:
            self.gone = not self.closed
            raise
        except (ConnectionError, RuntimeError) as error:
            log.debug("stream %s ended: %r", self.stream_id, error)
        if not self.closed:
            self.gone = True
        return resp
