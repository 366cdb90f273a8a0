"""A peer's entry point: ``python -m mesos_stateful.workloads.etcd.bootstrap <etcd-member.json>``.

- Data directory already there (``member/wal`` in the member's persistent volume: a relaunch in
  place): exec etcd without any ``--initial-cluster``; it restarts as the same etcd member (same
  id, its peer URL unchanged since its ports are kept) and rejoins by itself, without waiting for
  the other peers (all of them may be starting at once after a restart of the whole suite).
  Unless running peers are given and their member list has no member of ours (neither our peer
  URL nor a name ``<member id>.*``): then the member was removed (RemoveMember) and would exit at
  once; its old data is moved aside (``member.removed-<time>`` in the volume) and it joins anew.
- No running peers given: exec etcd as a new one-member cluster (``--initial-cluster-state new``).
- Otherwise, through the first running peer that answers: forget members that were added but
  never started (a failed join would otherwise count against the quorum) and any started member
  with this peer's URL (an earlier launch on the same address); add this peer unless it is
  already added (a retried bootstrap); then exec etcd with ``--initial-cluster`` from the
  member list and ``--initial-cluster-state existing``. Retried until ``join_timeout_seconds``.

The member's process is etcd itself (exec), so killing the task kills etcd.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from pathlib import Path

from mesos_stateful import sdk
from mesos_stateful.workloads.etcd import members
from mesos_stateful.workloads.etcd.member_file import MemberFile

log = logging.getLogger("etcd-bootstrap")


def etcd_argv(spec: MemberFile, initial_cluster: str | None, state: str | None) -> list[str]:
    argv = [
        spec.etcd,
        f"--name={spec.name}",
        f"--data-dir={spec.data_dir}",
        f"--listen-client-urls={spec.client_url}",
        f"--advertise-client-urls={spec.client_url}",
        f"--listen-peer-urls={spec.peer_url}",
        f"--initial-advertise-peer-urls={spec.peer_url}",
        f"--initial-cluster-token={spec.cluster_token}",
        "--logger=zap",
        "--log-outputs=stderr",
        *(f"--{flag}={value}" for flag, value in sorted(spec.flags.items())),
    ]
    if initial_cluster is not None and state is not None:
        argv += [f"--initial-cluster={initial_cluster}", f"--initial-cluster-state={state}"]
    return argv


async def join(spec: MemberFile) -> str:
    """Add this peer to the running cluster (idempotent); its ``--initial-cluster``."""

    async def add(client: members.Client) -> str:
        current = await client.members()
        for m in current:
            stale = not m.started and spec.peer_url not in m.peer_urls
            taken = m.started and spec.peer_url in m.peer_urls and m.name != spec.name
            if stale or taken:
                log.info(
                    "removing %s member %s %s",
                    "unstarted" if stale else "old",
                    m.hex_id,
                    m.name or m.peer_urls,
                )
                with contextlib.suppress(sdk.NotFound):  # removed meanwhile
                    await client.remove(m.id)
        current = await client.members()
        mine = [m for m in current if spec.peer_url in m.peer_urls]
        if mine:
            own = mine[0]
            log.info("already added as %s", own.hex_id)
        else:
            own, current = await client.add(spec.peer_url)
            log.info("added as %s to %d members", own.hex_id, len(current))
        own_ids.append(own.id)
        return members.initial_cluster(current, own.id, spec.name)

    own_ids: list[int] = []
    deadline = time.monotonic() + spec.join_timeout_seconds
    while True:
        try:
            endpoint, cluster = await members.first_answer(spec.endpoints, spec.request_timeout_seconds, add)
            log.info("joining through %s: %s", endpoint, cluster)
            await listed_everywhere(spec, own_ids[-1], deadline)
            return cluster
        except sdk.StatefulError as error:
            if time.monotonic() >= deadline:
                raise SystemExit(f"cannot join the cluster: {error.message}") from None
            log.warning("cannot join yet: %s", error.message)
            await asyncio.sleep(1.0)


async def listed_everywhere(spec: MemberFile, own_id: int, deadline: float) -> None:
    """Wait until every running peer that answers lists the new member: etcd, starting, reads the
    membership from the peers and exits ("member count is unequal") if one has not applied the
    add yet (seen under load)."""
    waiting = list(spec.endpoints)
    while waiting and time.monotonic() < deadline:
        for endpoint in list(waiting):
            async with members.Client(endpoint, spec.request_timeout_seconds) as client:
                try:
                    if any(m.id == own_id for m in await client.members()):
                        waiting.remove(endpoint)
                except sdk.StatefulError:
                    waiting.remove(endpoint)  # not answering: it will learn from the others
        if waiting:
            await asyncio.sleep(0.2)


def member_id_of(spec: MemberFile) -> str:
    """The suite's member id from the etcd name ``<member id>.<incarnation>``."""
    return spec.name.rpartition(".")[0] or spec.name


async def removed(spec: MemberFile) -> bool:
    """Whether the running peers answer and none of their members is ours (we were removed).
    False when none answers: then restart and let etcd decide."""

    async def ours(client: members.Client) -> bool:
        prefix = member_id_of(spec) + "."
        return any(spec.peer_url in m.peer_urls or m.name.startswith(prefix) for m in await client.members())

    try:
        _, listed = await members.first_answer(spec.endpoints, spec.request_timeout_seconds, ours)
    except sdk.StatefulError as error:
        log.info("cannot ask the running peers whether we are still a member (%s)", error.message)
        return False
    return not listed


def prepare(spec: MemberFile) -> list[str]:
    """Everything before the exec; returns etcd's argv."""
    data = Path(spec.data_dir)
    # etcd wants its data directory private (it warns otherwise); the volume is ours alone.
    with contextlib.suppress(OSError):
        data.mkdir(parents=True, exist_ok=True)
        data.chmod(0o700)
    if (data / "member" / "wal").is_dir():
        gone: bool = asyncio.run(removed(spec)) if spec.endpoints else False
        if not gone:
            log.info("data directory exists: restarting %s as the same etcd member", spec.name)
            return etcd_argv(spec, None, None)
        aside = data / f"member.removed-{time.strftime('%Y%m%dT%H%M%S')}"
        (data / "member").rename(aside)
        log.warning("this member was removed from the cluster: old data moved to %s; joining anew", aside)
    if not spec.endpoints:
        log.info("no running peer: starting a new cluster as %s", spec.name)
        return etcd_argv(spec, f"{spec.name}={spec.peer_url}", "new")
    return etcd_argv(spec, asyncio.run(join(spec)), "existing")


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s etcd-bootstrap: %(message)s", stream=sys.stderr
    )
    if len(args) != 1:
        raise SystemExit("usage: python -m mesos_stateful.workloads.etcd.bootstrap <etcd-member.json>")
    etcd = prepare(MemberFile.read(Path(args[0])))
    sys.stderr.flush()
    os.execv(etcd[0], etcd)


if __name__ == "__main__":
    main()
