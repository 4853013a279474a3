"""The run engine's shared core: store, event bus, backends and in-process signals.

One :class:`RunEngine` per process is shared by the HTTP service and the workers of that
process. Signals between them (a run was queued, a run changed, cancel this run now) are
shortcuts only: workers also poll the queue, and a cancel request reaches a worker in
another process through its next heartbeat.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from memory.runs.checkpoints import CheckpointJanitor, janitor_for
from memory.runs.events import EventBus
from memory.runs.models import CancelAction
from memory.runs.store import RunStore
from server.backends import Backends
from server.settings import Settings

RECURSION_LIMIT = 100_000
"""Graph steps per run: a step budget, not a loop guard (routing bounds every loop)."""
LOCAL_OWNER = "local"
"""The owner of threads and runs started at the machine with the CLI (its operator)."""


@dataclass(frozen=True)
class EngineOptions:
    """Timings of the engine (see the matching settings)."""

    lease_s: float = 30.0
    """A running run belongs to its worker this long after the last heartbeat."""
    heartbeat_s: float = 5.0
    poll_s: float = 0.5
    """How often an idle worker looks for due runs (a local enqueue wakes it at once)."""
    run_timeout_s: float | None = None
    max_attempts: int = 3
    """A run reclaimed this many times (its workers kept dying) fails instead."""
    sse_heartbeat_s: float = 15.0

    @classmethod
    def from_settings(cls, settings: Settings) -> EngineOptions:
        """The engine's timings from settings."""
        return cls(
            lease_s=settings.lease_s,
            heartbeat_s=settings.heartbeat_s,
            poll_s=settings.worker_poll_s,
            run_timeout_s=settings.run_timeout_s,
            max_attempts=settings.run_max_attempts,
            sse_heartbeat_s=settings.sse_heartbeat_s,
        )


class RunEngine:
    """What the service and the workers of one process share."""

    def __init__(
        self, backends: Backends, store: RunStore, bus: EventBus, options: EngineOptions
    ) -> None:
        self.backends = backends
        self.store = store
        self.bus = bus
        self.options = options
        self.janitor: CheckpointJanitor = janitor_for(backends.checkpointer)
        self._work = asyncio.Event()
        self._changed: dict[str, asyncio.Event] = {}
        self._cancellers: dict[str, Callable[[CancelAction], None]] = {}

    # --- queue wake-ups -----------------------------------------------------------------

    def wake_workers(self) -> None:
        """A run was queued or a thread freed: idle workers of this process look now."""
        self._work.set()

    async def wait_for_work(self, timeout_s: float) -> None:
        """Sleep until woken or ``timeout_s`` passed."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._work.wait()
        except TimeoutError:
            return
        finally:
            self._work.clear()

    # --- run changes --------------------------------------------------------------------

    def run_changed(self, run_id: str) -> None:
        """Wake local waiters on ``run_id`` (it finished, was cancelled or deleted)."""
        event = self._changed.pop(run_id, None)
        if event is not None:
            event.set()
        self.wake_workers()

    async def wait_run_changed(self, run_id: str, timeout_s: float) -> None:
        """Sleep until ``run_id`` changes in this process or ``timeout_s`` passed."""
        event = self._changed.setdefault(run_id, asyncio.Event())
        try:
            async with asyncio.timeout(timeout_s):
                await event.wait()
        except TimeoutError:
            return

    # --- cancellation -------------------------------------------------------------------

    def register_canceller(self, run_id: str, cancel: Callable[[CancelAction], None]) -> None:
        """A worker of this process executes ``run_id``; ``cancel`` stops it."""
        self._cancellers[run_id] = cancel

    def unregister_canceller(self, run_id: str) -> None:
        """The run left this process's workers."""
        self._cancellers.pop(run_id, None)

    def cancel_locally(self, run_id: str, action: CancelAction) -> bool:
        """Stop the run now if a worker of this process executes it."""
        cancel = self._cancellers.get(run_id)
        if cancel is None:
            return False
        cancel(action)
        return True

    def executing(self) -> set[str]:
        """Runs executed by this process's workers."""
        return set(self._cancellers)
