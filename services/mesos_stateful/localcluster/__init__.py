"""A single-process Mesos-compatible cluster: a master speaking the v1 scheduler HTTP API and
simulated agents speaking the v1 executor HTTP API, each on its own loopback address."""

from mesos_stateful.localcluster.cluster import LocalCluster
from mesos_stateful.localcluster.settings import LocalClusterSettings

__all__ = ["LocalCluster", "LocalClusterSettings"]
