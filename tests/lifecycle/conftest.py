"""Fixtures: the whole suite in-process (etcd, state, local cluster, offers, lifecycle, gateway,
Redis workload; ``redis_suite``: once per Redis implementation, Python and Node.js) for the
end-to-end tests; the planner tests need none of it."""

from __future__ import annotations

from mesos_stateful.testing.cluster import local_cluster  # noqa: F401
from mesos_stateful.testing.gateway import gateway  # noqa: F401
from mesos_stateful.testing.lifecycle import lifecycle_service, redis_suite, suite  # noqa: F401
from mesos_stateful.testing.offers import offers_service  # noqa: F401
from mesos_stateful.testing.state import etcd, state_client, state_service  # noqa: F401
