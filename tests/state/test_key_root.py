"""The state service's etcd key root (``key_root`` / STATEFUL_STATE_KEY_ROOT): another root is a
separate store in the same etcd, which is how one etcd serves a whole test session."""

from __future__ import annotations

import pytest
from state_helpers import instance

from mesos_stateful.api.stateful.v1 import state_service_pb2 as pb
from mesos_stateful.clients import records
from mesos_stateful.clients.state import StateClient
from mesos_stateful.state.etcdkv import EtcdKV, prefix_end
from mesos_stateful.state.settings import StateSettings
from mesos_stateful.testing.etcd import EtcdProcess
from mesos_stateful.testing.state import StateService, drop_key_root, fresh_key_root


def test_default_root_keeps_the_keys_and_another_root_moves_all_of_them() -> None:
    assert StateSettings.load([]).keys() == records.DEFAULT_KEYS
    assert records.DEFAULT_KEYS.etcd_key(pb.KIND_INSTANCE, "cache") == b"/stateful/v1/instances/cache"
    assert records.DEFAULT_KEYS.leader_term_key("offers") == records.leader_term_key("offers")
    keys = StateSettings.load(["--key-root", "/t/one/"]).keys()
    assert keys.etcd_key(pb.KIND_INSTANCE, "cache") == b"/t/one/v1/instances/cache"
    assert keys.leader_term_key("offers") == b"/t/one/fence/v1/leaders/offers"
    assert keys.parse_etcd_key(b"/t/one/v1/instances/cache") == records.record_key(pb.KIND_INSTANCE, "cache")
    assert keys.parse_etcd_key(b"/stateful/v1/instances/cache") is None


@pytest.mark.parametrize("root", ["", "stateful/", "/stateful", "/a//b/", "/a b/"])
def test_a_malformed_root_is_refused_at_start_up(root: str) -> None:
    with pytest.raises(SystemExit, match="key root"):
        StateSettings.load(["--key-root", root])


async def test_two_roots_on_one_etcd_do_not_see_each_other(shared_etcd: EtcdProcess) -> None:
    services = [StateService(shared_etcd.endpoint, key_root=fresh_key_root()) for _ in range(2)]
    clients: list[StateClient] = []
    try:
        for service in services:
            await service.start()
            clients.append(StateClient(service.endpoint))
            await clients[-1].wait_ready()
        await clients[0].put(instance("cache"), 0)
        await clients[1].put(instance("cache"), 0)  # create-only: it does not exist under root 2
        await clients[1].put(instance("other"), 0)
        assert [r.key.name for r in (await clients[0].list(pb.KIND_INSTANCE))[0]] == ["cache"]
        assert [r.key.name for r in (await clients[1].list(pb.KIND_INSTANCE))[0]] == ["cache", "other"]
    finally:
        for client in clients:
            await client.close()
        for service in services:
            await service.stop()
    # The fixture's clean-up drops a root's keys and nothing else.
    await drop_key_root(shared_etcd.endpoint, services[0].keys)
    kv = EtcdKV([shared_etcd.endpoint])
    try:
        for service, left in zip(services, (0, 2), strict=True):
            root = service.keys.root.encode()
            assert len((await kv.range(root, prefix_end(root))).kvs) == left
    finally:
        await drop_key_root(shared_etcd.endpoint, services[1].keys)
        await kv.close()
