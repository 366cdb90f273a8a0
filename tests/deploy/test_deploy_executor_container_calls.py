"""What the offers service (real pymesos) sends with ``executor_image`` set, recorded between it and
the local cluster's master: every ACCEPT decodes strictly as the project's ``mesos.v1`` scheduler
Call and passes the master's validation rules, and each launched TaskInfo's ExecutorInfo carries
the ContainerInfo that runs the executor in the image (a plain member, and one with a volume:
RESERVE + CREATE + LAUNCH with the volume mounted from the agents' work dir). The local cluster
does not run Docker executors; only the calls are the subject here."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import pytest_asyncio
from conformance.call_recorder import CallRecorder
from conformance.test_framework_calls import check_call, operations, web_spec

# pymesos must be imported on the main thread (it installs a SIGINT handler).
import mesos_stateful.offers.driver  # noqa: F401
from mesos_stateful.api.mesos.v1 import mesos_pb2
from mesos_stateful.api.stateful.v1 import offer_service_pb2 as api
from mesos_stateful.api.stateful.v1 import types_pb2
from mesos_stateful.clients.state import StateClient
from mesos_stateful.common.images import SUITE_IMAGE
from mesos_stateful.localcluster import encoding
from mesos_stateful.testing.cluster import RunningCluster, local_cluster  # noqa: F401
from mesos_stateful.testing.offers import OffersService
from mesos_stateful.testing.poll import eventually
from mesos_stateful.testing.state import StateService, etcd, state_client, state_service  # noqa: F401

Json = dict[str, Any]
WORK_DIR = "/srv/mesos-agent"


@pytest.fixture
def recorder(local_cluster: RunningCluster) -> Iterator[CallRecorder]:  # noqa: F811
    proxy = CallRecorder(local_cluster.master_address)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest_asyncio.fixture
async def offers(state_service: StateService, recorder: CallRecorder) -> AsyncIterator[OffersService]:  # noqa: F811
    service = OffersService(
        state_service.endpoint,
        recorder.address,
        executor_image=SUITE_IMAGE,
        executor_agent_work_dir=WORK_DIR,
    )
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


def launched(recorder: CallRecorder) -> dict[str, Json]:
    """task id -> TaskInfo, of every LAUNCH sent."""
    out: dict[str, Json] = {}
    for call in recorder.recorded():
        if call.type == "ACCEPT":
            for operation in operations(call.json):
                for task in (operation.get("launch") or {}).get("task_infos", []):
                    out[task["task_id"]["value"]] = task
    return out


async def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    await eventually(condition, what, timeout)


@pytest.mark.slow
async def test_launches_carry_the_executor_container(
    offers: OffersService,
    state_client: StateClient,  # noqa: F811
    recorder: CallRecorder,
) -> None:
    assert offers.stub is not None
    await offers.wait_subscribed()
    await offers.stub.Launch(api.LaunchRequest(launch=web_spec("plain", 0)))
    volume = types_pb2.Volume(persistence_id="vol-0.v1", container_path="data", size_mb=32)
    await state_client.put(types_pb2.Member(id="vol-0", instance="vol", volume=volume), expected_revision=0)
    await offers.stub.Launch(api.LaunchRequest(launch=web_spec("vol", 0, volume)))
    await wait_until(lambda: {"plain-0.1", "vol-0.1"} <= set(launched(recorder)), "both LAUNCHes")

    calls = recorder.recorded()
    events = recorder.recorded_events()
    framework_id = next(e for e in events if e["type"] == "SUBSCRIBED")["subscribed"]["framework_id"]
    subscribe = next(c for c in calls if c.type == "SUBSCRIBE").json
    framework = {**subscribe["subscribe"]["framework_info"], "id": framework_id}
    offered = {o["id"]["value"]: o for e in events if e["type"] == "OFFERS" for o in e["offers"]["offers"]}
    accepts = [c for c in calls if c.type == "ACCEPT"]
    problems = [p for c in accepts for p in check_call(c, framework, offered)]
    assert not problems, "\n".join(problems)
    assert {"RESERVE", "CREATE", "LAUNCH"} <= {o["type"] for c in accepts for o in operations(c.json)}

    tasks = launched(recorder)
    for task_id, info in tasks.items():
        executor = encoding.to_message(info["executor"], mesos_pb2.ExecutorInfo)
        assert isinstance(executor, mesos_pb2.ExecutorInfo)
        container = executor.container
        assert container.type == mesos_pb2.ContainerInfo.DOCKER, task_id
        assert container.docker.image == SUITE_IMAGE
        assert container.docker.network == mesos_pb2.ContainerInfo.DockerInfo.HOST
        mounts = {v.container_path: v.host_path for v in container.volumes}
        assert mounts["/var/run/docker.sock"] == "/var/run/docker.sock"
        if task_id.startswith("vol-"):
            assert mounts["data"] == f"{WORK_DIR}/volumes/roles/stateful/vol-0.v1"
        else:
            assert set(mounts) == {"/var/run/docker.sock"}
