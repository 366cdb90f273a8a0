"""Readiness check of a peer: ``python -m mesos_stateful.workloads.etcd.check --endpoint URL
--name NAME``. Exit 0 when the peer is healthy (leader, quorum read) and its own member list has
it as a started voting member under NAME; 1 otherwise."""

from __future__ import annotations

import argparse
import asyncio
import sys

from mesos_stateful import sdk
from mesos_stateful.workloads.etcd import members


async def ready(endpoint: str, name: str, timeout: float) -> tuple[bool, str]:
    async with members.Client(endpoint, timeout) as client:
        try:
            if not await client.healthy():
                return False, "not healthy"
            listed = [m for m in await client.members() if m.name == name]
        except sdk.StatefulError as error:
            return False, error.message
    if not listed or not listed[0].client_urls:
        return False, f"{name} is not a started member"
    if listed[0].is_learner:
        return False, f"{name} is a learner"
    return True, f"{name} is member {listed[0].hex_id}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args(argv)
    ok, why = asyncio.run(ready(args.endpoint, args.name, args.timeout))
    print(why, file=sys.stdout if ok else sys.stderr)
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
