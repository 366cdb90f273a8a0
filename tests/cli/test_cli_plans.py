"""statefulctl retry / pause / resume / describe / events as subprocesses against a live gateway
(real etcd and state service; the lifecycle's part is written into the store as it would)."""

from __future__ import annotations

import asyncio
import json

from test_cli_statefulctl import TIMEOUT, ctl, finish, make_running, start

from mesos_stateful.api.stateful.v1 import state_service_pb2 as st
from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.clients.events import EventLog, new_event
from mesos_stateful.clients.state import StateClient
from mesos_stateful.testing.gateway import RunningGateway, register_workload


async def _running_cache(gateway: RunningGateway, state: StateClient) -> None:
    await register_workload(state)
    created = await ctl(gateway.endpoint, "create", "redis", "cache", "--replicas", "3")
    assert created.code == 0, created
    await make_running(state, "cache", 3)


async def test_pause_resume_retry_messages_and_exit_codes(
    gateway: RunningGateway, state_client: StateClient
) -> None:
    await _running_cache(gateway, state_client)
    ep = gateway.endpoint
    paused = await ctl(ep, "pause", "cache", "--wait", "--timeout", "20")
    assert paused.code == 0, paused
    assert "instance cache paused; `statefulctl resume cache` continues" in paused.out
    again = await ctl(ep, "pause", "cache")
    assert again.code == 1 and again.err.startswith("error: instance cache is already paused"), again
    got = await ctl(ep, "get", "cache")
    assert "paused: no new step starts; `statefulctl resume cache` continues" in got.out, got.out
    resumed = await ctl(ep, "resume", "cache", "-o", "json")
    assert resumed.code == 0 and "paused" not in json.loads(resumed.out)["instance"], resumed.out
    nothing = await ctl(ep, "retry", "cache")
    assert nothing.code == 1 and nothing.err.strip() == "error: plan deploy is COMPLETE: nothing to retry", (
        nothing
    )
    missing = await ctl(ep, "retry", "nosuch")
    assert missing.code == 1 and "instance 'nosuch' not found" in missing.err, missing
    bad = await ctl(ep, "events", "Bad!")
    assert bad.code == 2 and "name" in bad.err, bad


async def test_describe_shows_spec_members_plan_and_the_promotion(
    gateway: RunningGateway, state_client: StateClient
) -> None:
    await _running_cache(gateway, state_client)
    decision = T.PromotionDecision(
        promote_member_id="cache-1",
        reason="cache-1 holds every other candidate's data",
        candidate_ids=["cache-1", "cache-2"],
        positions={"cache-1": "abc:1500", "cache-2": "abc:1200"},
    )
    await EventLog(state_client).record(
        new_event(
            "cache",
            T.EVENT_KIND_PROMOTED,
            "cache-1 promoted to master (position abc:1500; candidates cache-1=abc:1500 cache-2=abc:1200)",
            member_id="cache-1",
            decision=decision,
        )
    )
    described = await ctl(gateway.endpoint, "describe", "cache")
    assert described.code == 0, described
    out = described.out
    for expected in ("workload: redis  replicas: 3", "cache-0", "cache-2", "deploy", "events (last 2):"):
        assert expected in out, out
    assert "OPERATOR_ACTION" in out and "created (redis, 3 members)" in out, out
    assert "PROMOTED" in out and "cache-1=abc:1500 cache-2=abc:1200" in out, out
    as_json = json.loads((await ctl(gateway.endpoint, "describe", "cache", "-o", "json")).out)
    assert as_json["instance"]["spec"]["name"] == "cache"
    promoted = as_json["events"][-1]
    assert (
        promoted["kind"] == "EVENT_KIND_PROMOTED"
        and promoted["decision"]["positions"]["cache-2"] == "abc:1200"
    )


async def test_events_lists_then_watches_when_piped(
    gateway: RunningGateway, state_client: StateClient
) -> None:
    await _running_cache(gateway, state_client)
    listed = await ctl(gateway.endpoint, "events", "cache")
    assert listed.code == 0 and "OPERATOR_ACTION" in listed.out and "created (redis, 3 members)" in listed.out
    watcher = await start(gateway.endpoint, "events", "cache", "--watch", "-o", "json")
    assert watcher.stdout is not None
    first = json.loads(await asyncio.wait_for(watcher.stdout.readline(), TIMEOUT))
    assert first["action"] == "create"
    paused = await ctl(gateway.endpoint, "pause", "cache")
    assert paused.code == 0
    line = json.loads(await asyncio.wait_for(watcher.stdout.readline(), TIMEOUT))
    assert line["kind"] == "EVENT_KIND_OPERATOR_ACTION" and line["action"] == "pause", line
    # The instance record removed: the watch ends by itself.
    await state_client.delete(st.KIND_INSTANCE, "cache")
    result = await finish(watcher)
    assert result.code == 0, result
