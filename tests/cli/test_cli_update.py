"""``statefulctl update`` and ``statefulctl apply -f``, run as subprocesses against a live gateway
(real etcd and state service; lifecycle's part, observing a generation, is written directly)."""

from __future__ import annotations

import json
from pathlib import Path

from test_cli_runtime import ctl

from mesos_stateful.api.stateful.v1 import state_service_pb2 as st
from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.clients.state import StateClient
from mesos_stateful.testing.gateway import register_workload, running_gateway
from mesos_stateful.testing.state import StateService

EXIT_BAD_INPUT = 2


async def observe(state: StateClient, name: str) -> types_pb2.Instance:
    """What lifecycle does once a generation is rolled out: observed_generation = generation."""

    def mutate(current: object) -> types_pb2.Instance:
        assert isinstance(current, types_pb2.Instance)
        current.observed_generation = current.generation
        current.phase = types_pb2.INSTANCE_PHASE_RUNNING
        return current

    record = await state.update(st.KIND_INSTANCE, name, mutate)
    assert record is not None
    return record.instance


async def stored(state: StateClient, name: str) -> types_pb2.Instance:
    return (await state.get(st.KIND_INSTANCE, name)).instance


async def test_apply_creates_then_updates_only_what_differs(
    state_service: StateService, state_client: StateClient, tmp_path: Path
) -> None:
    await register_workload(state_client)
    file = tmp_path / "cache.yaml"
    file.write_text(
        "name: cache\nworkload: redis\nreplicas: 3\nruntime: process\n"
        "resources:\n  cpus: 0.5\nconfig:\n  appendonly: yes\nlabels:\n  team: db\n"
    )
    async with running_gateway(state_service.endpoint) as gateway:
        ep = gateway.endpoint
        created = await ctl(ep, "apply", "-f", str(file))
        assert created.code == 0 and "instance cache created" in created.out, created
        first = await observe(state_client, "cache")
        assert first.spec.config == {"appendonly": "yes"} and first.spec.labels == {"team": "db"}

        same = await ctl(ep, "apply", "-f", str(file))
        assert same.code == 0 and "instance cache unchanged (generation 1)" in same.out, same

        file.write_text(
            file.read_text().replace("appendonly: yes", "appendonly: no\n  maxmemory-policy: allkeys-lru")
        )
        changed = await ctl(ep, "apply", "-f", str(file))
        assert changed.code == 0 and "updated (generation 2): rolling" in changed.out, changed
        after = await stored(state_client, "cache")
        assert dict(after.spec.config) == {"appendonly": "no", "maxmemory-policy": "allkeys-lru"}
        assert after.generation == 2 and after.observed_generation == 1

        # A spec shown by `get -o json` ({"instance": {"spec": ...}} is not, {"spec": ...} is) applies too.
        doc = {"spec": {"name": "cache", "replicas": 4, "labels": {"team": "db", "tier": "cache"}}}
        file.write_text(json.dumps(doc))
        scaled = await ctl(ep, "apply", "-f", str(file))
        assert scaled.code == 0, scaled
        after = await stored(state_client, "cache")
        assert after.spec.replicas == 4 and dict(after.spec.labels) == {"team": "db", "tier": "cache"}
        assert dict(after.spec.config) == {"appendonly": "no", "maxmemory-policy": "allkeys-lru"}

        file.write_text("name: cache\nworkload: mysql\n")
        other = await ctl(ep, "apply", "-f", str(file))
        assert other.code == EXIT_BAD_INPUT and "workload 'mysql' differs" in other.err, other
        file.write_text("name: cache\nconfig:\n  bogus: 1\n")
        bad = await ctl(ep, "apply", "-f", str(file))
        assert bad.code == EXIT_BAD_INPUT and "spec.config.bogus: unknown key" in bad.err, bad
        file.write_text("name: [\n")
        broken = await ctl(ep, "apply", "-f", str(file))
        assert broken.code == EXIT_BAD_INPUT and "not YAML" in broken.err, broken


async def test_update_flags_and_errors(state_service: StateService, state_client: StateClient) -> None:
    await register_workload(state_client)
    async with running_gateway(state_service.endpoint) as gateway:
        ep = gateway.endpoint
        assert (await ctl(ep, "create", "redis", "cache", "--replicas", "3")).code == 0
        early = await ctl(ep, "update", "cache", "--set", "appendonly=yes")
        assert early.code != 0 and "not deployed yet" in early.err, early
        read = await observe(state_client, "cache")

        labels = await ctl(ep, "update", "cache", "--label", "team=db")
        assert labels.code == 0 and "updated (generation 2, applied)" in labels.out, labels
        flags = ["--set", "appendonly=yes", "--cpus", "0.25", "--mem", "200"]
        changed = await ctl(ep, "update", "cache", *flags)
        assert changed.code == 0 and "(generation 3): rolling" in changed.out, changed
        spec = (await stored(state_client, "cache")).spec
        assert spec.config["appendonly"] == "yes"
        assert spec.resources.cpus == 0.25 and spec.resources.mem_mb == 200
        shown = await ctl(ep, "get", "cache")
        assert "generation: 3 (applied: 2, rolling out)" in shown.out, shown.out

        stale = await ctl(ep, "update", "cache", "--image", "redis:8", "--etag", str(read.revision))
        assert stale.code != 0 and "changed since you read it" in stale.err, stale
        bad = await ctl(ep, "update", "cache", "--set", "bogus=1")
        assert bad.code == EXIT_BAD_INPUT and "spec.config.bogus: unknown key" in bad.err, bad
        nothing = await ctl(ep, "update", "cache")
        assert nothing.code == EXIT_BAD_INPUT and "nothing to change" in nothing.err, nothing
        missing = await ctl(ep, "update", "nope", "--set", "appendonly=no")
        assert missing.code != 0 and "not found" in missing.err, missing
        as_json = await ctl(ep, "-o", "json", "update", "cache", "--unset", "appendonly")
        assert as_json.code == 0, as_json
        shown = json.loads(as_json.out)["instance"]
        assert "appendonly" not in shown["spec"].get("config", {}) and shown["generation"] == "4"
