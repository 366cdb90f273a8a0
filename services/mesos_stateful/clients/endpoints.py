"""Addresses of the state service as services are given them (``state_endpoint`` settings).

The state service is stateless in front of etcd, so several replicas may run; a client is given
all of them in one setting and gRPC spreads calls over the ones that answer. Accepted forms:

- ``host:port``: one replica (any host name);
- ``127.0.0.1:7100,127.0.0.1:7101``: several replicas by IP address (``localhost`` counts as
  127.0.0.1); this is turned into the gRPC target ``ipv4:127.0.0.1:7100,127.0.0.1:7101``;
- a gRPC target with several addresses as gRPC names it (gRPC naming doc, ``doc/naming.md``):
  ``ipv4:a:p,b:p``, ``ipv6:[::1]:p,[::1]:q``, or ``dns:///name:port`` (every address the name
  resolves to).

A target with several addresses uses the ``round_robin`` policy with client-side health checking
(gRPC ``healthCheckConfig`` on ``stateful.v1.StateService``): a replica that answers NOT_SERVING
(its etcd unreachable) or does not answer at all gets no calls while another one serves.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping, Sequence
from typing import Any

STATE_SERVICE = "stateful.v1.StateService"

_SCHEMES = ("ipv4:", "ipv6:", "dns:")


def _check_port(name: str, value: str, port: str) -> None:
    if not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError(f"{name}: bad port in {value!r} (1-65535)")


def _split(name: str, address: str, value: str) -> tuple[str, str]:
    host, sep, port = address.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{name} must be host:port (or several, comma-separated), got {value!r}")
    _check_port(name, value, port)
    return host, port


def grpc_target(value: str, name: str = "state_endpoint") -> str:
    """The gRPC channel target of ``value`` (see the module doc); ValueError naming ``name``."""
    value = value.strip()
    if not value:
        raise ValueError(f"{name} is empty: give host:port of the state service")
    if value.startswith(_SCHEMES):
        scheme, _, rest = value.partition(":")
        if scheme == "dns":
            _split(name, rest.lstrip("/").rsplit("/", 1)[-1], value)
            return value
        for address in rest.split(","):
            host, _ = _split(name, address.strip(), value)
            try:
                ipaddress.ip_address(host.strip("[]"))
            except ValueError:
                raise ValueError(
                    f"{name}: {host!r} in {value!r} is not an IP address ({scheme}: takes addresses)"
                ) from None
        return value
    addresses = [a.strip() for a in value.split(",")]
    if len(addresses) == 1:
        return addresses[0]  # one address: gRPC takes it as it is (check_endpoint validates it)
    out: list[str] = []
    families: set[int] = set()
    for address in addresses:
        host, port = _split(name, address, value)
        if host == "localhost":
            host = "127.0.0.1"
        try:
            ip = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            raise ValueError(
                f"{name}: several replicas need IP addresses ({host!r} in {value!r} is a name); "
                "or give one DNS name that resolves to every replica as dns:///name:port"
            ) from None
        families.add(ip.version)
        out.append(f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}")
    if len(families) > 1:
        raise ValueError(f"{name}: mixes IPv4 and IPv6 addresses in {value!r}")
    return ("ipv6:" if 6 in families else "ipv4:") + ",".join(out)


def check_endpoint(name: str, value: str) -> None:
    """ValueError (naming the setting ``name``) unless ``value`` is a valid state endpoint."""
    target = grpc_target(value, name)
    if not is_multi_address(target):
        _split(name, target, value)


def is_multi_address(target: str) -> bool:
    """Whether a target (from :func:`grpc_target`) may name several replicas."""
    return target.startswith(_SCHEMES)


def channel_options(
    target: str, service: str = STATE_SERVICE, method_config: Sequence[Mapping[str, Any]] = ()
) -> list[tuple[str, str | int]]:
    """Extra channel options for ``target``: round_robin with client-side health checking when it
    may name several replicas (one address: calls get the service's own errors), and the gRPC
    service config's ``methodConfig`` entries given (e.g. a ``retryPolicy``, see
    ``mesos_stateful.common.retry.grpc_method_config``)."""
    config: dict[str, Any] = {}
    if is_multi_address(target):
        config = {"loadBalancingConfig": [{"round_robin": {}}], "healthCheckConfig": {"serviceName": service}}
    if method_config:
        config["methodConfig"] = [dict(entry) for entry in method_config]
    if not config:
        return []
    return [("grpc.service_config", json.dumps(config))]
