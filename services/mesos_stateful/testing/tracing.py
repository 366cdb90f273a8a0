"""Tests' tracer providers: install one as this process's global provider for a test, and put the
one before it back afterwards (OpenTelemetry lets the global provider be set once per process:
the guard is reset for the test and restored with the provider)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.util._once import Once


@contextmanager
def global_provider(provider: TracerProvider, shutdown: bool = True) -> Iterator[TracerProvider]:
    """``provider`` is the global tracer provider inside the block; on leaving it, shut down (its
    processors flush; ``shutdown=False``: the caller does it inside the block, e.g. from a thread
    while its event loop serves the receiver) and the previous provider is back."""
    saved = (trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE)
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace.set_tracer_provider(provider)
    try:
        yield provider
    finally:
        if shutdown:
            provider.shutdown()
        trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE = saved
