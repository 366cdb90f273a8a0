"""The base of every service's settings: typed, from flags and environment variables, validated
at start-up (pydantic-settings).

A service declares ``class XSettings(ServiceSettings)`` with ``env_prefix`` ``STATEFUL_X_``; each
field is a flag ``--field-name`` and an environment variable ``STATEFUL_X_FIELD_NAME``; flags win.
Invariants between fields go in a ``model_validator``; a bad value stops the service with a
message naming the setting.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Self, TypeVar

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, CliApp, SettingsConfigDict

S = TypeVar("S", bound="ServiceSettings")


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="STATEFUL_",
        cli_kebab_case=True,
        cli_implicit_flags=True,
        extra="ignore",
    )

    listen: str = Field("127.0.0.1:0", description="host:port the gRPC server binds (port 0: any)")
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR")

    @classmethod
    def load(cls, argv: Sequence[str] | None = None) -> Self:
        """Settings from flags (``argv``, default sys.argv[1:]) and the environment; exits with a
        readable message on a bad value."""
        try:
            return CliApp.run(cls, cli_args=list(sys.argv[1:] if argv is None else argv))
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in error.errors()
            )
            raise SystemExit(f"{cls.__name__}: invalid settings: {problems}") from None
