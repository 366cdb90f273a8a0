from mesos_stateful.testing.state import etcd  # noqa: F401
