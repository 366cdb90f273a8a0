"""The controller: watches instances, members, tasks and workloads, and keeps one worker per
instance reconciling it.

Level-triggered: on start it lists every instance and reconciles each; a watch event only wakes the
instance it is about (a workload registration wakes every instance); every instance is also
reconciled every ``resync_interval_seconds`` as a safety net. One worker per instance runs one
reconcile at a time, so two plans never run on one instance (or member) at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from mesos_stateful.api.stateful.v1 import state_service_pb2 as spb
from mesos_stateful.lifecycle.reconciler import GONE, Reconciler
from mesos_stateful.lifecycle.settings import LifecycleSettings
from mesos_stateful.lifecycle.store import Store

log = logging.getLogger(__name__)

WATCHED = (spb.KIND_INSTANCE, spb.KIND_MEMBER, spb.KIND_TASK, spb.KIND_WORKLOAD)


class Worker:
    """Reconciles one instance whenever woken, or when its next step is due."""

    def __init__(self, controller: Controller, name: str) -> None:
        self.controller = controller
        self.name = name
        self.wakeup = asyncio.Event()
        self.wakeup.set()
        self.task = asyncio.create_task(self._run(), name=f"reconcile-{name}")

    async def _run(self) -> None:
        settings = self.controller.settings
        failures = 0
        try:
            while True:
                self.wakeup.clear()
                try:
                    result = await self.controller.reconciler.reconcile(self.name)
                    failures = 0
                except asyncio.CancelledError:
                    raise
                except Exception as error:  # the store may be down: try again with backoff
                    failures += 1
                    delay = settings.backoff(failures)
                    log.warning("%s: reconcile failed (%s); again in %.1fs", self.name, error, delay)
                    result = time.time() + delay
                if result == GONE:
                    return
                timeout = settings.resync_interval_seconds
                if result is not None:
                    timeout = min(timeout, max(0.05, result - time.time()))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self.wakeup.wait()
        finally:
            if self.controller.workers.get(self.name) is self:
                del self.controller.workers[self.name]


class Controller:
    def __init__(self, settings: LifecycleSettings, store: Store, reconciler: Reconciler) -> None:
        self.settings = settings
        self.store = store
        self.reconciler = reconciler
        self.workers: dict[str, Worker] = {}
        self.started = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # Told of every change of an instance (the health monitor re-reads it).
        self.on_change: Callable[[str], None] | None = None

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._watch(), name="lifecycle-watch"),
            asyncio.create_task(self._resync(), name="lifecycle-resync"),
        ]

    async def stop(self) -> None:
        tasks = self._tasks + [w.task for w in self.workers.values()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        self.workers.clear()
        self.started.clear()

    def wake(self, name: str) -> None:
        if not name:
            return
        if self.on_change is not None:
            self.on_change(name)
        worker = self.workers.get(name)
        if worker is None or worker.task.done():
            self.workers[name] = Worker(self, name)
        else:
            worker.wakeup.set()

    async def _wake_all(self) -> int:
        records, revision = await self.store.client.list(spb.KIND_INSTANCE)
        for record in records:
            self.wake(record.key.name)
        return int(revision)

    async def _watch(self) -> None:
        while True:
            try:
                revision = await self._wake_all()
                self.started.set()
                async for event in self.store.client.watch(kinds=WATCHED, start_revision=revision + 1):
                    self._route(event)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("watch failed (%s); listing again", error)
                await asyncio.sleep(1.0)

    def _route(self, event: spb.WatchResponse) -> None:
        record = event.record
        kind = record.key.kind
        if kind == spb.KIND_INSTANCE:
            self.wake(record.key.name)
        elif kind == spb.KIND_MEMBER:
            self.wake(record.key.name.split("/", 1)[0])
        elif kind == spb.KIND_TASK:
            self.wake(record.task.instance)
        elif kind == spb.KIND_WORKLOAD:
            if event.type == spb.EVENT_TYPE_PUT:
                # Steps that waited on this workload retry now, not at their backoff's next attempt.
                self.reconciler.workload_registered(record.key.name)
            for name in list(self.workers):
                self.wake(name)

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(self.settings.resync_interval_seconds)
            try:
                await self._wake_all()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("resync failed: %s", error)
