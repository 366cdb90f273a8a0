"""Instance.endpoints of a real etcd instance: every peer's client URL, the comma-separated URI a
client (etcdctl --endpoints) takes, each one answering."""

from __future__ import annotations

import pytest

from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.testing.lifecycle import Suite
from mesos_stateful.workloads.etcd import members

pytestmark = pytest.mark.slow

NAME = "kv"


def running(i: T.Instance, peers: int) -> bool:
    return (
        i.phase == T.INSTANCE_PHASE_RUNNING
        and len(i.members) == peers
        and all(m.state == T.MEMBER_STATE_RUNNING and m.role == T.ROLE_PEER for m in i.members)
    )


async def test_etcd_uri_lists_every_peer(etcd_suite: Suite) -> None:
    suite = etcd_suite
    await suite.create(NAME, 3, workload="etcd")
    await suite.wait_instance(NAME, lambda i: running(i, 3), 180, "3 peers running")
    instance = (await suite.get(NAME)).instance  # through the gateway, which fills the endpoints
    endpoints = instance.endpoints
    assert endpoints.port_name == "client" and not endpoints.HasField("primary")
    expected = [f"http://{m.host}:{m.ports['client']}" for m in instance.members]
    assert endpoints.uri.split(",") == expected
    assert [p.member_id for p in endpoints.peers] == [m.id for m in instance.members]
    async with members.Client(expected[0], 5) as client:
        await client.put("through-the-uri", "yes")
    for url in endpoints.uri.split(","):
        async with members.Client(url, 5) as client:
            assert await client.get("through-the-uri") == "yes"
