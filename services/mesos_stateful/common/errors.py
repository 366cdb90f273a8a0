"""One error vocabulary for the whole suite.

Domain code raises these; the gRPC layer maps them to status codes in one place
(:mod:`mesos_stateful.common.grpc_errors`). ``TemporaryError`` means "the same call may succeed
later" (retry with backoff), ``PermanentError`` means "retrying will not help".
"""

from __future__ import annotations

from collections.abc import Mapping


class StatefulError(Exception):
    """Base of every error the suite raises on purpose."""

    retryable = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class TemporaryError(StatefulError):
    """Retryable: a dependency is down or busy (gRPC UNAVAILABLE)."""

    retryable = True


class Unavailable(TemporaryError):
    """A dependency (etcd, Mesos, a workload service) cannot be reached now."""


class Conflict(TemporaryError):
    """A compare-and-swap lost a race: re-read and try again (gRPC FAILED_PRECONDITION)."""


class PermanentError(StatefulError):
    """Not retryable: the request itself is wrong or impossible."""


class InvalidArgument(PermanentError):
    """Bad input. ``fields`` maps each bad field (dotted path) to what is wrong with it."""

    def __init__(self, message: str, fields: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.fields: dict[str, str] = dict(fields or {})


class NotFound(PermanentError):
    """The thing named does not exist."""


class AlreadyExists(PermanentError):
    """A create found the name taken."""


class FailedPrecondition(PermanentError):
    """The request is valid but the current state forbids it (e.g. scaling a deleting instance)."""


class Aborted(PermanentError):
    """A conditional write whose condition no longer holds (gRPC ABORTED, AIP-154): the caller's
    etag is stale, or a concurrent change won the compare-and-swap. Read again, then retry."""


class NotLeader(PermanentError):
    """A fenced write was refused because its leadership term is over (gRPC ABORTED), or the
    caller is a standby. The writer must stop acting as the leader; retrying cannot help
    (Kleppmann's fencing tokens; client-go leaderelection: a deposed leader stops)."""
