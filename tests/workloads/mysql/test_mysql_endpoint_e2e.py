"""Instance.endpoints of a real MariaDB instance: the URI (admin account, admin_password) connects
to the writable master, the read endpoint is a read-only replica."""

from __future__ import annotations

import asyncio
from urllib.parse import unquote, urlsplit

import pymysql
import pytest

from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.testing.lifecycle import Suite, master_of

pytestmark = pytest.mark.slow

NAME = "shop"


def running(i: T.Instance, members: int) -> bool:
    return (
        i.phase == T.INSTANCE_PHASE_RUNNING
        and len(i.members) == members
        and all(m.state == T.MEMBER_STATE_RUNNING for m in i.members)
    )


def read_only(uri: str, address: str | None = None) -> int:
    """@@read_only of the server the URI names (or of ``address`` with the URI's account)."""
    parts = urlsplit(uri)
    host, port = (address or parts.netloc.rsplit("@", 1)[1]).rsplit(":", 1)
    connection = pymysql.connect(
        host=host,
        port=int(port),
        user=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        connect_timeout=5,
    )
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT @@read_only")
            row = cursor.fetchone()
            assert row is not None
            return int(row[0])
    finally:
        connection.close()


async def test_mysql_uri_reaches_the_master(mysql_suite: Suite) -> None:
    suite = mysql_suite
    await suite.create(NAME, 2, workload="mysql")
    await suite.wait_instance(NAME, lambda i: running(i, 2), 180, "2 members running")
    response = await suite.get(NAME, secrets=True)
    instance, endpoints = response.instance, response.instance.endpoints
    master = master_of(instance)
    assert endpoints.port_name == "mysql"
    assert endpoints.uri == f"mysql://admin@{master.host}:{master.ports['mysql']}/"
    assert endpoints.uri_with_secret.startswith("mysql://admin:")
    assert await asyncio.to_thread(read_only, endpoints.uri_with_secret) == 0
    [reader] = endpoints.reads
    assert reader.member_id != master.id and reader.ready
    assert await asyncio.to_thread(read_only, endpoints.uri_with_secret, reader.address) == 1
    # Without the secret the URI carries none, and reads of the instance never do.
    assert "admin:" not in endpoints.uri
    assert (await suite.get(NAME)).instance.endpoints.uri_with_secret == ""
