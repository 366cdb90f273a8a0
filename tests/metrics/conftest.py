from mesos_stateful.testing.state import etcd, state_client, state_service  # noqa: F401
