from mesos_stateful.testing.gateway import gateway, gateway_stub  # noqa: F401
from mesos_stateful.testing.state import etcd, state_client, state_service  # noqa: F401
