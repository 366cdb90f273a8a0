"""The public SDK for writing a mesos-stateful workload service in Python.

Everything a workload author needs is importable from here, and only what is listed in
``__all__`` is public: the rest of ``mesos_stateful`` may change without notice. The built-in
Redis, MySQL/MariaDB and etcd workloads (``mesos_stateful.workloads.*``) use nothing else
(an import-linter contract in ``pyproject.toml``, checked by ``make lint``), and
``statefulctl new-workload NAME`` scaffolds a service that uses only this module.

A workload service
==================

A workload is a gRPC service implementing ``stateful.v1.WorkloadService``
(``protos/stateful/v1/workload_service.proto``; any language can implement it). In Python::

    from mesos_stateful import sdk
    from mesos_stateful.sdk import Context, pb

    class MySettings(sdk.WorkloadSettings):
        model_config = SettingsConfigDict(env_prefix="STATEFUL_MINE_")

    class Mine(sdk.WorkloadBase):
        @sdk.callback
        async def Config(self, request: pb.ConfigRequest, context: Context) -> pb.ConfigResponse:
            me = sdk.member_in_role(request.context, sdk.types_pb2.ROLE_PEER)
            return pb.ConfigResponse(launch=sdk.launch_spec(request.context, me, ...))

    def main() -> None:
        settings = MySettings.load()            # --flags or STATEFUL_MINE_* variables
        sdk.run(Mine(description(), settings), settings)

- :class:`WorkloadBase` answers ``Describe`` with the ``WorkloadDescription`` it was built with
  (name, topology, port names, default resources and image, secret names, config keys) and has a
  safe default for every other callback (empty answers; ``SlaveLost`` / ``PeerLost`` answer
  ``replace=True``; ``CheckMember`` and ``Fence`` answer UNIMPLEMENTED, so lifecycle watches the
  workload through Mesos alone and promotes only once Mesos reports the old master's task ended).
  ``Config`` has no default: override it. Override the others your topology needs, each an
  ``async`` method decorated with :func:`callback`, taking ``(self, request, context)``: the
  request message and the gRPC :data:`Context` (``grpc.aio.ServicerContext``; rarely needed).
- :class:`WorkloadSettings`: the settings every workload service has (``listen``,
  ``state_endpoint``, ``advertise``, ``lease_ttl_seconds``, ``callback_timeout_seconds``
  (default 20 s), ``connect_timeout_seconds``, ``grace_seconds``, ``metrics_listen``,
  ``log_level``); subclass it with your own ``env_prefix``; ``.load()`` reads flags and variables.
- :func:`run` is a whole ``main()``; :func:`serve` is its async part (serve, register under a
  lease in the state service, wait for SIGTERM/SIGINT, deregister, drain).

What every callback must guarantee
==================================

Lifecycle calls a callback with a ``CallbackContext`` (``request.context``): the whole instance
(spec, every member with its role, host, ports, state and volume, sorted by ordinal), the id of the
member the call is about, the instance's secrets and the attempt number (1, 2, ...). Then:

- **Idempotent.** A callback may run again with the same context (a retry after a timeout whose
  first attempt did act, a restart of lifecycle between the call and the record of its outcome);
  the second run must leave the same result (e.g. ``REPLICAOF`` the master it already follows).
- **Bounded.** A callback that runs longer than ``callback_timeout_seconds`` is cancelled and
  answers UNAVAILABLE (retried). Talk to your server with ``connect_timeout_seconds``.
- **Config is pure**: context in, ``LaunchSpec`` out, no side effect (it is asked again before
  every launch of the member).
- **The data-safety rules.** The project's promise (the design card, "Data safety: the rules
  every change must keep"; a test in ``make test`` stands behind each) is kept partly by lifecycle
  and partly by the workload, where only it knows the answer:

  1. *No acknowledged write is lost* by any single failure. Each workload states what
     "acknowledged" means (Redis: confirmed by ``WAIT 1``; MariaDB: committed with semi-sync;
     etcd: a committed Raft entry) and configures its members so (``Config``).
  2. *Never two writable masters.* ``Fence`` stops the old master taking writes before a
     promotion, and a master cut off from its replicas must stop by itself (self-fencing, e.g.
     Redis ``min-replicas-to-write``). A Mesos kill is not a fence. Without ``Fence``, lifecycle
     promotes only once Mesos reports the old task ended.
  3. *Promote only a replica that holds every acknowledged write*, decided on the positions of
     *all* candidates (``MasterLost``): one that does not answer is waited for (raise
     :class:`Unavailable`, or answer empty: lifecycle asks again), never skipped
     (:func:`ask_members` reports who did not answer); a diverged or stale member is never promoted.
  4. *Never start a master empty while the instance had data.* Data lives on the member's
     persistent volume (:func:`data_dir`, :func:`volume_path`); a member is restarted in place on
     it; ``Config`` must not initialise over existing data.
  5. *Replication is watched all the time*: ``CheckMember`` reports following whom, lag and
     position (:func:`health`, :func:`condition`), so a stopped, chained, lagging or diverged
     replica shows within seconds and is repaired.
  6. *A crash of any service touches no database*: callbacks are idempotent and hold no state
     that matters between calls (everything is in the context).

Errors decide retries
=====================

Raise the suite's error types; :func:`callback` turns them into gRPC status and lifecycle's
plan step decides from the status (``lifecycle/steps.py``, ``lifecycle/callbacks.py``):

=============================== ======================== ======================================
raised in a callback            gRPC status              the plan step
=============================== ======================== ======================================
:class:`Unavailable`            UNAVAILABLE              DELAYED, retried with backoff
:class:`TemporaryError`         UNAVAILABLE              DELAYED, retried with backoff
(callback timeout)              UNAVAILABLE              DELAYED, retried with backoff
:class:`InvalidArgument`        INVALID_ARGUMENT (+      ERROR: not retried; a person acts
                                BadRequest field
                                violations)
:class:`FailedPrecondition`     FAILED_PRECONDITION      ERROR
:class:`NotFound`               NOT_FOUND                ERROR
:class:`PermanentError`         FAILED_PRECONDITION      ERROR
any other exception             UNKNOWN                  ERROR (a bug: fix it)
=============================== ======================== ======================================

So: "the server is not up yet / not reachable / busy" is :class:`Unavailable` (the usual case
while a member starts); "the request can never succeed" is a :class:`PermanentError` subclass.
:class:`StatefulError` is the base of both (for ``except``); ``error.retryable`` says which kind.

Helpers
=======

Context: :func:`member`, :func:`member_in_role`, :func:`master`, :func:`others`,
:func:`has_master`, :func:`candidates`, :func:`endpoint`, :func:`ask_members`, :func:`in_docker`.
Volume: :data:`DATA_DIR`, :func:`volume_path`, :func:`data_dir`. Launch: :func:`launch_spec`,
:func:`file_spec`, :func:`command_check`, :func:`tcp_check`, :func:`port_var`, :data:`HOST`,
:data:`SANDBOX`, :func:`sandbox_path`, :func:`secret`, :func:`effective_config`; images:
:func:`suite_image`, :data:`IMAGE_PYTHON`. Health (``CheckMember``): :func:`condition`,
:func:`health`. Messages: :data:`pb` (``stateful.v1`` workload service requests and responses) and
:data:`types_pb2` (``Member``, ``LaunchSpec``, ``Check``, roles, ...).

Variables in a launch: the executor expands ``${HOST}`` (the member's address),
``${PORT_<NAME>}`` (one per port name, from the offer) and ``${MESOS_SANDBOX}`` in argv, env
values, check commands and files with ``expand=True``; ``$${`` is a literal ``${``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# The error types are light (no grpc): modules that run next to a member (bootstrap scripts,
# checks run every second) import them from here without loading the rest. Everything else is
# imported on first use (PEP 562), with the same names for type checkers and IDEs.
from mesos_stateful.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermanentError,
    StatefulError,
    TemporaryError,
    Unavailable,
)

if TYPE_CHECKING:
    from mesos_stateful.api.stateful.v1 import types_pb2
    from mesos_stateful.api.stateful.v1 import workload_service_pb2 as pb
    from mesos_stateful.sdk._launch import (
        HOST,
        IMAGE_PYTHON,
        SANDBOX,
        command_check,
        effective_config,
        file_spec,
        launch_spec,
        port_var,
        sandbox_path,
        secret,
        suite_image,
        tcp_check,
    )
    from mesos_stateful.sdk._run import run, serve
    from mesos_stateful.workloads.base import (
        DATA_DIR,
        Context,
        WorkloadBase,
        WorkloadSettings,
        ask_members,
        callback,
        candidates,
        condition,
        data_dir,
        endpoint,
        has_master,
        health,
        in_docker,
        master,
        member,
        member_in_role,
        others,
        volume_path,
    )

_BASE = "mesos_stateful.workloads.base"
_LAUNCH = "mesos_stateful.sdk._launch"
# Public name -> (module, attribute; "" for the module itself). Mirrors the TYPE_CHECKING imports.
_LAZY: dict[str, tuple[str, str]] = {
    "pb": ("mesos_stateful.api.stateful.v1.workload_service_pb2", ""),
    "types_pb2": ("mesos_stateful.api.stateful.v1.types_pb2", ""),
    **{name: ("mesos_stateful.sdk._run", name) for name in ("run", "serve")},
    **{
        name: (_LAUNCH, name)
        for name in (
            "HOST",
            "IMAGE_PYTHON",
            "SANDBOX",
            "command_check",
            "effective_config",
            "file_spec",
            "launch_spec",
            "port_var",
            "sandbox_path",
            "secret",
            "suite_image",
            "tcp_check",
        )
    },
    **{
        name: (_BASE, name)
        for name in (
            "DATA_DIR",
            "Context",
            "WorkloadBase",
            "WorkloadSettings",
            "ask_members",
            "callback",
            "candidates",
            "condition",
            "data_dir",
            "endpoint",
            "has_master",
            "health",
            "in_docker",
            "master",
            "member",
            "member_in_role",
            "others",
            "volume_path",
        )
    },
}

if not TYPE_CHECKING:  # a type checker sees the imports above, not a catch-all __getattr__

    def __getattr__(name: str) -> Any:
        where = _LAZY.get(name)
        if where is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        module = importlib.import_module(where[0])
        value = getattr(module, where[1]) if where[1] else module
        globals()[name] = value
        return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "DATA_DIR",
    "HOST",
    "IMAGE_PYTHON",
    "SANDBOX",
    "Context",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "PermanentError",
    "StatefulError",
    "TemporaryError",
    "Unavailable",
    "WorkloadBase",
    "WorkloadSettings",
    "ask_members",
    "callback",
    "candidates",
    "command_check",
    "condition",
    "data_dir",
    "effective_config",
    "endpoint",
    "file_spec",
    "has_master",
    "health",
    "in_docker",
    "launch_spec",
    "master",
    "member",
    "member_in_role",
    "others",
    "pb",
    "port_var",
    "run",
    "sandbox_path",
    "secret",
    "serve",
    "suite_image",
    "tcp_check",
    "types_pb2",
    "volume_path",
]
