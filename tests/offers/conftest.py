"""Fixtures: real etcd + state service, the local cluster, and the offers service (real pymesos)."""

from __future__ import annotations

from mesos_stateful.testing.cluster import local_cluster  # noqa: F401
from mesos_stateful.testing.offers import offers_service  # noqa: F401
from mesos_stateful.testing.state import etcd, state_client, state_service  # noqa: F401
