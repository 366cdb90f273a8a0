"""Reading a member's sandbox through its Mesos agent's ``/files/read`` endpoint.

Mesos docs/endpoints/files/read.md: ``GET <agent>/files/read?path=P&offset=N&length=N`` answers
``{"data": "...", "offset": N}``; ``offset=-1`` gives the file's size in ``offset`` (no data); one
answer carries at most 16 pages (64 KiB). The member record says where to ask
(``Member.agent_url``, the agent's URL from the offer; ``Member.sandbox_directory``, the virtual
path ``/frameworks/<fid>/executors/<eid>/runs/latest`` every agent serves), so the same code reads
a local-cluster agent and a real one.

``data`` is a JSON string; bytes that are not UTF-8 come back exactly with
``encode("utf-8", "surrogateescape")`` from the local cluster (escapes ``\\udc80``-``\\udcff``);
a real agent writes them raw, which JSON parsers replace: the offset is advanced by the bytes
decoded, so a real agent's non-UTF-8 output may repeat a few bytes, never skip any.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

# Seconds one HTTP request to the agent may take.
REQUEST_TIMEOUT_SECONDS = 10.0
# The largest answer an agent gives (Mesos: 16 pages); we ask for this much per request.
CHUNK_BYTES = 64 * 1024


class SandboxError(Exception):
    """The agent could not be read: ``status`` is its HTTP status (0: not reached)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass
class SandboxFile:
    """One file of a sandbox on an agent: ``agent_url`` ("http://host:port"), ``path`` (virtual)."""

    agent_url: str
    path: str

    def _get(self, offset: int, length: int | None) -> tuple[bytes, int]:
        query = {"path": self.path, "offset": str(offset)}
        if length is not None:
            query["length"] = str(length)
        url = f"{self.agent_url.rstrip('/')}/files/read?{urllib.parse.urlencode(query)}"
        try:
            with urllib.request.urlopen(url, timeout=REQUEST_TIMEOUT_SECONDS) as response:
                body = json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as error:
            detail = error.read().decode("utf-8", "replace").strip()
            message = f"{error.code} {error.reason}" + (f": {detail}" if detail else "")
            raise SandboxError(message, error.code) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise SandboxError(f"cannot reach the agent at {self.agent_url}: {reason}") from None
        except ValueError as error:
            raise SandboxError(f"the agent at {self.agent_url} answered no JSON: {error}") from None
        data = str(body.get("data", "")).encode("utf-8", "surrogateescape")
        return data, int(body.get("offset", 0))

    def size(self) -> int:
        """The file's size in bytes (``offset=-1``)."""
        return self._get(-1, None)[1]

    def read(self, offset: int, length: int = CHUNK_BYTES) -> bytes:
        """Up to ``length`` bytes from ``offset`` (fewer at the end of the file, b"" past it)."""
        data, _ = self._get(offset, length)
        return data

    def tail_start(self, size: int, lines: int) -> int:
        """The offset where the last ``lines`` lines of the first ``size`` bytes begin (a last
        line without its newline counts)."""
        if lines <= 0:
            return size
        start, buffer = size, b""
        while start > 0:
            step = min(CHUNK_BYTES, start)
            chunk = self.read(start - step, step)
            if not chunk:
                break
            start -= len(chunk)
            buffer = chunk + buffer
            body = buffer[:-1] if buffer.endswith(b"\n") else buffer
            if body.count(b"\n") >= lines:
                cut = len(body)
                for _ in range(lines):
                    cut = body.rfind(b"\n", 0, cut)
                return start + cut + 1
        return 0
