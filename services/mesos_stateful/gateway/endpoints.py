"""How a client connects to an instance: ``Instance.endpoints``, computed on every read.

Nothing is stored: the endpoints follow from the members (role, state, host, named ports) and
the workload's port names (``WorkloadDescription.port_names``). The client port is the one the
workload names in :data:`URI_FORMS` (its connection URI), else the first of its port names, else
the member's only port (sorted first when it has several).

* ``primary``: the member in role MASTER with an address (ready or not: ``ready`` says which);
* ``reads``: the ready members in role SLAVE;
* ``peers``: every member in role PEER with an address;
* ``uri``: to the primary for master/replica workloads, to every peer (comma-separated, as
  ``etcdctl --endpoints`` takes them) for peers; never with a secret. ``uri_with_secret`` (only
  when the caller asked for secrets, GetInstance ``include_secrets``) adds the password.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

from mesos_stateful.api.stateful.v1 import types_pb2 as T


@dataclass(frozen=True)
class UriForm:
    """A workload's connection URI: ``<scheme>://[<user>[:<password>]@]host:port<path>``."""

    scheme: str
    port_name: str
    user: str = ""
    # The instance secret (WorkloadDescription.secret_names) that is the user's password.
    password_secret: str = ""
    path: str = ""


# The suite's workloads (workloads/*/description.py port names and secrets; mysql's "admin" is
# the account for people, workloads/mysql/config.py; redis has no user: "redis://:pw@host:port").
URI_FORMS: dict[str, UriForm] = {
    "redis": UriForm("redis", "redis", password_secret="password"),
    "mysql": UriForm("mysql", "mysql", user="admin", password_secret="admin_password", path="/"),
    "etcd": UriForm("http", "client"),
}
# A workload not listed: tcp://host:port on its client port.
DEFAULT_SCHEME = "tcp"


def client_port(instance: T.Instance, description: T.WorkloadDescription | None) -> str:
    """The name of the port clients use (see the module docstring); "" when nothing names one."""
    form = URI_FORMS.get(instance.spec.workload)
    if form is not None:
        return form.port_name
    if description is not None and description.port_names:
        return description.port_names[0]
    names = sorted({name for m in instance.members for name in m.ports})
    return names[0] if names else ""


def _endpoint(member: T.Member, port_name: str) -> T.InstanceEndpoints.Endpoint | None:
    port = member.ports.get(port_name, 0)
    if not member.host or not port:
        return None
    return T.InstanceEndpoints.Endpoint(
        member_id=member.id,
        address=f"{member.host}:{port}",
        ready=member.state == T.MEMBER_STATE_RUNNING,
    )


def _uri(form: UriForm, addresses: list[str], password: str | None) -> str:
    if not addresses:
        return ""
    user = quote(form.user, safe="")
    if password is not None and form.password_secret:
        user += ":" + quote(password, safe="")
    credentials = f"{user}@" if user else ""
    return ",".join(f"{form.scheme}://{credentials}{address}{form.path}" for address in addresses)


def compute(
    instance: T.Instance,
    description: T.WorkloadDescription | None = None,
    secrets: Mapping[str, str] | None = None,
) -> T.InstanceEndpoints:
    """The instance's endpoints (``secrets``: the instance's secrets when the caller asked for
    them; None: no ``uri_with_secret``)."""
    port_name = client_port(instance, description)
    result = T.InstanceEndpoints(port_name=port_name)
    if not port_name:
        return result
    for member in instance.members:
        endpoint = _endpoint(member, port_name)
        if endpoint is None or member.state == T.MEMBER_STATE_STOPPED:
            continue
        if member.role == T.ROLE_MASTER and not result.HasField("primary"):
            result.primary.CopyFrom(endpoint)
        elif member.role == T.ROLE_SLAVE and endpoint.ready:
            result.reads.append(endpoint)
        elif member.role == T.ROLE_PEER:
            result.peers.append(endpoint)
    form = URI_FORMS.get(instance.spec.workload, UriForm(DEFAULT_SCHEME, port_name))
    primary = [result.primary.address] if result.HasField("primary") else []
    addresses = primary or [p.address for p in result.peers]
    result.uri = _uri(form, addresses, None)
    if secrets is not None and form.password_secret and form.password_secret in secrets:
        result.uri_with_secret = _uri(form, addresses, secrets[form.password_secret])
    return result


def fill(
    instance: T.Instance,
    description: T.WorkloadDescription | None = None,
    secrets: Mapping[str, str] | None = None,
) -> T.Instance:
    """Set ``instance.endpoints`` (in place) and return the instance."""
    instance.endpoints.CopyFrom(compute(instance, description, secrets))
    return instance
