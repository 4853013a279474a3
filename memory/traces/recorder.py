"""Writes model calls to the trace store off the hot path, and guards run budgets.

The gateway hands each finished call to :meth:`TraceRecorder.record`, which only prices
it, adds it to the run's running totals and queues it; a background task writes queued
calls in batches. :meth:`TraceRecorder.close` (and :meth:`flush`) wait until everything
queued is written, so a clean shutdown loses nothing. A failed write is retried; calls
are dropped (and logged) only when the store keeps failing at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, replace

from errors import BudgetExceeded, InvalidInput, NotFound, ScribeError
from memory.traces.port import Budget, ModelCall, TraceStore, Usage

log = logging.getLogger("scribe.traces")

_LOOP_ATTEMPTS = 10
"""A store down this long (about a minute of backoff) costs the batch, not the run."""
FREE_MODELS = frozenset({"offline", "replay"})
"""Labels of models that cost nothing: the offline model and recorded answers."""
OFFLINE_VARIANT_PREFIX = "offline:"
"""``offline:<variant>`` labels a salted offline model: free like the plain one."""


@dataclass(frozen=True)
class ModelPrice:
    """USD per million tokens of one model."""

    input_per_mtok: float
    output_per_mtok: float

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """The estimated cost of a call."""
        return (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1e6


def model_name(label: str) -> str:
    """``"gpt-4o-mini @ https://..."`` → ``"gpt-4o-mini"``."""
    return label.partition(" @ ")[0].strip()


@dataclass
class _Spent:
    """Running totals of one run in this process (mutable, recorder-private)."""

    budget: Budget
    tokens: int = 0
    cost_usd: float = 0.0


class TraceRecorder:
    """The :class:`~nodes.llm.trace.CallSink` of a process."""

    def __init__(
        self,
        store: TraceStore,
        prices: Mapping[str, ModelPrice] | None = None,
        *,
        batch_size: int = 64,
        retry_delay_s: float = 0.5,
    ) -> None:
        self._store = store
        self._prices = dict(prices or {})
        self._batch_size = batch_size
        self._retry_delay_s = retry_delay_s
        self._queue: asyncio.Queue[ModelCall] = asyncio.Queue()
        self._runs: dict[str, _Spent] = {}
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def store(self) -> TraceStore:
        """Where calls are written."""
        return self._store

    async def start(self) -> None:
        """Start the background writer. Idempotent."""
        if self._task is None:
            self._task = asyncio.create_task(self._write_loop(), name="trace-recorder")

    # --- budgets ------------------------------------------------------------------------

    def begin_run(self, run_id: str, budget: Budget, spent: Usage | None = None) -> None:
        """Track ``run_id`` with ``budget``; ``spent`` seeds what earlier attempts used."""
        self._runs[run_id] = _Spent(
            budget,
            tokens=spent.total_tokens if spent else 0,
            cost_usd=spent.cost_usd if spent else 0.0,
        )

    def end_run(self, run_id: str) -> None:
        """Stop tracking the run."""
        self._runs.pop(run_id, None)

    def before_call(self, run_id: str) -> None:
        """Raise :class:`BudgetExceeded` when the run has used up a limit."""
        spent = self._runs.get(run_id)
        if spent is None or not spent.budget.limited:
            return
        budget = spent.budget
        if budget.max_tokens is not None and spent.tokens >= budget.max_tokens:
            raise BudgetExceeded(
                f"token budget exceeded: {spent.tokens:,} tokens used of {budget.max_tokens:,}",
                run_id=run_id,
                used_tokens=spent.tokens,
                max_tokens=budget.max_tokens,
            )
        if budget.max_cost_usd is not None and spent.cost_usd >= budget.max_cost_usd:
            raise BudgetExceeded(
                f"cost budget exceeded: ${spent.cost_usd:.4f} used of ${budget.max_cost_usd:.4f}",
                run_id=run_id,
                used_cost_usd=round(spent.cost_usd, 6),
                max_cost_usd=budget.max_cost_usd,
            )

    # --- recording ----------------------------------------------------------------------

    def price(self, call: ModelCall) -> float | None:
        """The call's estimated cost; ``None`` for a model missing from the price table."""
        if call.replayed_from is not None:
            return 0.0
        name = model_name(call.model)
        price = self._prices.get(name)
        if price is not None:
            # Listed first so a price given for the offline model (to try budgets) applies.
            return price.cost(call.input_tokens, call.output_tokens)
        if name in FREE_MODELS or name.startswith(OFFLINE_VARIANT_PREFIX):
            return 0.0
        return None

    def record(self, call: ModelCall) -> None:
        """Price and queue a finished call (never blocks)."""
        spent = self._runs.get(call.run_id)
        if spent is None:
            # Only runs registered here (begin_run) have a trace row to hold their calls;
            # one stray call must not cost a whole batch its write.
            log.debug("call %s of untraced run %s not recorded", call.call_id, call.run_id)
            return
        priced = replace(call, cost_usd=self.price(call))
        spent.tokens += priced.total_tokens
        spent.cost_usd += priced.cost_usd or 0.0
        if self._closed:
            log.error("trace recorder closed: call %s of run %s dropped", call.call_id, call.run_id)
            return
        self._queue.put_nowait(priced)

    async def flush(self) -> None:
        """Return once every call queued so far is written."""
        if self._task is None:
            await self._drain_now()
            return
        await self._queue.join()

    async def close(self) -> None:
        """Write what is queued, then stop."""
        if self._closed:
            return
        await self.flush()
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._drain_now()

    async def _write_loop(self) -> None:
        while True:
            first = await self._queue.get()
            batch = [first]
            while len(batch) < self._batch_size and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._write(batch, attempts=_LOOP_ATTEMPTS)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _drain_now(self) -> None:
        """Write what is queued without the background task (closing, or never started)."""
        batch: list[ModelCall] = []
        while not self._queue.empty():
            batch.append(self._queue.get_nowait())
            self._queue.task_done()
        if batch:
            await self._write(batch, attempts=3)

    async def _write(self, batch: list[ModelCall], *, attempts: int) -> None:
        """Write ``batch``, trying at most ``attempts`` times."""
        tried = 0
        while True:
            tried += 1
            try:
                await self._store.save_calls(batch)
                return
            except (NotFound, InvalidInput) as exc:
                # Permanent for some call in the batch (its run was deleted meanwhile):
                # write the others one by one and drop only what cannot be written.
                if len(batch) == 1:
                    log.warning("trace store: call %s dropped: %s", batch[0].call_id, exc)
                    return
                for call in batch:
                    await self._write([call], attempts=attempts)
                return
            except ScribeError as exc:
                if tried >= attempts:
                    log.error("trace store: %d calls dropped: %s", len(batch), exc)
                    return
                log.warning("trace store write failed (attempt %d): %s", tried, exc)
                await asyncio.sleep(self._retry_delay_s * min(tried, 10))
