"""etcd's cluster membership API over its HTTP/JSON gateway (``/v3/cluster/member/*``).

Why the gateway rather than a gRPC client: the process may import only one set of etcd stubs
(DESIGN.md, known traps), the state service owns that choice, and a member's bootstrap and
readiness check should start fast without grpc; the gateway is built into etcd 3.4 and speaks
the same API. uint64 ids travel as decimal strings in its JSON.

Errors: cannot connect, timeouts and a cluster that cannot change its membership now (no quorum,
not enough started members) are ``errors.Unavailable``; an unknown member is ``errors.NotFound``.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp

from mesos_stateful import sdk

_T = TypeVar("_T")

# gRPC codes etcd puts in error bodies.
_NOT_FOUND = 5
_INVALID_ARGUMENT = 3


@dataclass(frozen=True)
class Member:
    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    is_learner: bool = False

    @property
    def started(self) -> bool:
        """An added member has no name until its process has joined."""
        return bool(self.name)

    @property
    def hex_id(self) -> str:
        return f"{self.id:x}"

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> Member:
        return cls(
            id=int(item.get("ID", 0)),
            name=str(item.get("name", "")),
            peer_urls=tuple(item.get("peerURLs", ())),
            client_urls=tuple(item.get("clientURLs", ())),
            is_learner=bool(item.get("isLearner", False)),
        )


class Client:
    """Calls one etcd member's gateway. Use as ``async with Client(url, timeout) as c``."""

    def __init__(self, endpoint: str, timeout: float) -> None:
        self.endpoint = endpoint.rstrip("/")
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout))

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._session.close()

    async def _call(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            if body is None:
                response = await self._session.get(self.endpoint + path)
            else:
                response = await self._session.post(self.endpoint + path, json=body)
            async with response:
                data: dict[str, Any] = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            raise sdk.Unavailable(f"etcd {self.endpoint}: {error or type(error).__name__}") from None
        if response.status != 200 or "error" in data:
            message = f"etcd {self.endpoint}: {data.get('message') or data.get('error') or response.status}"
            code = data.get("code")
            if code == _NOT_FOUND:
                raise sdk.NotFound(message)
            if code == _INVALID_ARGUMENT:
                raise sdk.InvalidArgument(message)
            raise sdk.Unavailable(message)
        return data

    async def members(self) -> list[Member]:
        data = await self._call("/v3/cluster/member/list", {})
        return [Member.from_json(m) for m in data.get("members", [])]

    async def add(self, peer_url: str) -> tuple[Member, list[Member]]:
        """Add a voting member; returns it and the new member list."""
        data = await self._call("/v3/cluster/member/add", {"peerURLs": [peer_url]})
        return Member.from_json(data["member"]), [Member.from_json(m) for m in data.get("members", [])]

    async def remove(self, member_id: int) -> None:
        await self._call("/v3/cluster/member/remove", {"ID": str(member_id)})

    async def healthy(self) -> bool:
        """etcd's own /health: a leader, no alarm, and a quorum read succeeds."""
        try:
            return (await self._call("/health")).get("health") == "true"
        except sdk.StatefulError:
            return False

    async def status(self) -> dict[str, Any]:
        return await self._call("/v3/maintenance/status", {})

    async def put(self, key: str, value: str) -> None:
        await self._call("/v3/kv/put", {"key": _b64(key), "value": _b64(value)})

    async def get(self, key: str) -> str | None:
        kvs = (await self._call("/v3/kv/range", {"key": _b64(key)})).get("kvs", [])
        return base64.b64decode(kvs[0].get("value", "")).decode() if kvs else None


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def first_answer(
    endpoints: Iterable[str], timeout: float, call: Callable[[Client], Awaitable[_T]]
) -> tuple[str, _T]:
    """``call`` on the first endpoint that answers; Unavailable (naming each problem) if none.
    Other errors (NotFound, InvalidArgument) come from the first endpoint that answered."""
    problems: list[str] = []
    for endpoint in endpoints:
        async with Client(endpoint, timeout) as client:
            try:
                return endpoint, await call(client)
            except sdk.Unavailable as error:
                problems.append(error.message)
    raise sdk.Unavailable("no etcd member answered: " + ("; ".join(problems) or "no endpoints"))


def initial_cluster(members: Iterable[Member], own_id: int, own_name: str) -> str:
    """``--initial-cluster`` for a member joining an existing cluster: every member (etcd checks
    the peer URLs match the cluster's), with the joining one under its own name."""
    entries = []
    for m in members:
        name = own_name if m.id == own_id else (m.name or f"unstarted-{m.hex_id}")
        entries += [f"{name}={url}" for url in m.peer_urls]
    return ",".join(sorted(entries))
