"""The run service: threads, their state, and durable runs, for one owner at a time.

This is what the LangGraph-compatible routes call. It validates what a run may ask for,
queues runs (:class:`~memory.runs.store.RunStore`), reads and edits thread state through
the graph's checkpointer, waits for runs and replays their events. Workers
(:class:`~server.runs.worker.Worker`) execute the runs.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass, replace
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig
from langgraph.errors import InvalidUpdateError
from langgraph.types import StateSnapshot

from errors import Conflict, InvalidInput, NotFound, ScribeError, StoreUnavailable
from graphs.novel import GRAPH_ID
from memory.redis import RedisService
from memory.runs.events import END, EventBus, InProcessEventBus, RedisEventBus, RunEvent
from memory.runs.models import (
    EVENT_OF_GRAPH_MODE,
    GRAPH_MODE_OF,
    STREAM_MODES,
    CancelAction,
    MultitaskStrategy,
    RunKwargs,
    RunRecord,
    RunStatus,
    ThreadRecord,
    ThreadStatus,
    normalise_id,
)
from memory.runs.store import RunStore, ThreadSort
from memory.traces.port import ReplaySpec, TracedRun
from nodes.session import BookRequest, validate_request
from nodes.state import NovelInput
from server.backends import Backends
from server.runs.engine import EngineOptions, RunEngine
from server.runs.gates import check_resume
from server.runs.serde import dumps, values_with_interrupts
from server.runs.tracing import live_from_step, replay_agents
from server.runs.worker import Worker, died_here
from server.settings import Settings

ASSISTANT_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, GRAPH_ID))
"""The one assistant's id: LangGraph Server's id for a graph's system assistant."""
INPUT_KEYS: frozenset[str] = NovelInput.__required_keys__ | NovelInput.__optional_keys__
"""Every key the novel graph's input may have (one source: nodes.state.NovelInput)."""
CONTROL_EVENTS = frozenset({"metadata", "error", END})
END_GRACE_S = 1.0
"""How long a stream waits for a finished run's own ``end`` before making one up."""
DELETE_WAIT_S = 30.0
CHECK_EVERY_S = 2.0
"""How often a quiet stream looks at the run's row (ended elsewhere, events lost)."""


@dataclass(frozen=True)
class RunRequest:
    """A validated request to run the graph on a thread."""

    assistant_id: str
    kwargs: RunKwargs
    metadata: dict[str, Any]
    multitask_strategy: MultitaskStrategy = "enqueue"
    if_not_exists: Literal["create", "reject"] = "reject"
    after_seconds: float = 0.0
    book: BookRequest | None = None
    """A book its entry point has validated already (the CLI, the novels API): the run's
    input, and the novel recorded for the thread if it has none yet."""


@dataclass(frozen=True)
class Executed:
    """A run executed in this process: its record once it stopped, and the error that
    ended its graph (the original exception, for the CLI to report as it is)."""

    run: RunRecord
    error: BaseException | None = None


@dataclass(frozen=True)
class ThreadView:
    """A thread and its current graph state."""

    thread: ThreadRecord
    snapshot: StateSnapshot


def resolve_assistant(assistant_id: str) -> str:
    """The assistant id for ``novel`` or its UUID; NotFound for anything else."""
    if assistant_id in (GRAPH_ID, ASSISTANT_ID):
        return ASSISTANT_ID
    try:
        if str(uuid.UUID(assistant_id)) == ASSISTANT_ID:
            return ASSISTANT_ID
    except ValueError:
        pass
    raise NotFound("assistant", assistant_id)


def _valid_ids(ids: Sequence[str]) -> list[str]:
    """The ids that can name a thread (others match nothing)."""
    valid: list[str] = []
    for raw in ids:
        with suppress(InvalidInput):
            valid.append(normalise_id(raw, "thread_id"))
    return valid


def _thread_config(thread_id: str, checkpoint_id: str | None = None) -> RunnableConfig:
    configurable: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": ""}
    if checkpoint_id:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}


class RunService:
    """Threads, state and runs of the ``novel`` graph, checked against their owner."""

    def __init__(self, engine: RunEngine) -> None:
        self.engine = engine
        self.workers: list[Worker] = []
        """The workers this process started (readiness reports on them)."""

    @classmethod
    async def open(
        cls,
        settings: Settings,
        backends: Backends,
        redis: RedisService | None,
        stack: AsyncExitStack,
    ) -> RunService:
        """Open the queue (same database as app data) and the event bus; ``stack`` closes
        them. Workers are started separately (:meth:`start_workers`)."""
        store = RunStore.from_url(settings.sql_url)
        stack.push_async_callback(store.close)
        await store.setup()
        bus: EventBus
        if redis is not None:
            bus = RedisEventBus(redis, ttl_s=settings.event_ttl_s)
        else:
            bus = InProcessEventBus(ttl_s=settings.event_ttl_s)
        stack.push_async_callback(bus.close)
        engine = RunEngine(backends, store, bus, EngineOptions.from_settings(settings))
        return cls(engine)

    @property
    def store(self) -> RunStore:
        """The queue and thread registry."""
        return self.engine.store

    @property
    def backends(self) -> Backends:
        """Graph, checkpointer and stores."""
        return self.engine.backends

    async def start_workers(
        self, stack: AsyncExitStack, concurrency: int, *, worker_id: str | None = None
    ) -> Worker | None:
        """Start a worker executing ``concurrency`` runs at once (none for 0); ``stack``
        stops it, handing unfinished runs back to the queue."""
        if concurrency < 1:
            return None
        worker = Worker(self.engine, concurrency=concurrency, worker_id=worker_id)
        stack.push_async_callback(worker.stop)
        await worker.start()
        self.workers.append(worker)
        return worker

    # --- threads ------------------------------------------------------------------------

    async def create_thread(
        self,
        owner_id: str,
        *,
        thread_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        if_exists: Literal["raise", "do_nothing"] = "raise",
    ) -> ThreadView:
        """A new idle thread (its id is the novel's); Conflict when the id is taken."""
        tid = normalise_id(thread_id, "thread_id") if thread_id else str(uuid.uuid4())
        record = await self.store.create_thread(
            tid, owner_id, {"graph_id": GRAPH_ID, **(metadata or {})}, if_exists=if_exists
        )
        return ThreadView(record, await self._snapshot(tid))

    async def get_thread(self, owner_id: str, thread_id: str) -> ThreadView:
        """The thread and its state."""
        record = await self.store.get_thread(self._tid(thread_id), owner_id)
        return ThreadView(record, await self._snapshot(record.thread_id))

    async def update_thread(
        self, owner_id: str, thread_id: str, metadata: dict[str, Any]
    ) -> ThreadView:
        """Merge metadata into the thread's."""
        record = await self.store.update_thread(self._tid(thread_id), owner_id, metadata)
        return ThreadView(record, await self._snapshot(record.thread_id))

    async def delete_thread(self, owner_id: str, thread_id: str) -> None:
        """Delete the thread, its runs (stopping active ones), checkpoints and novel (app
        data, world memory and indexed passages)."""
        tid = self._tid(thread_id)
        active = await self.store.delete_thread(tid, owner_id)
        stopping = [r for r in active if self.engine.cancel_locally(r, "interrupt")]
        # Let this process's workers stop writing checkpoints before they are deleted
        # (a worker elsewhere notices the missing row at its next heartbeat).
        with suppress(TimeoutError):
            async with asyncio.timeout(DELETE_WAIT_S):
                for run_id in stopping:
                    while run_id in self.engine.executing():
                        await self.engine.wait_run_changed(run_id, self.engine.options.poll_s)
        await self.backends.checkpointer.adelete_thread(tid)
        context = self.backends.context
        await context.world.drop_novel(tid)
        await context.passages.drop_novel(tid)
        await self.backends.tracing.store.delete_thread(tid)
        with suppress(NotFound):
            await self.backends.store.delete_novel(tid)

    async def search_threads(
        self,
        owner_id: str,
        *,
        metadata: dict[str, Any] | None = None,
        status: ThreadStatus | None = None,
        ids: Sequence[str] | None = None,
        limit: int = 10,
        offset: int = 0,
        sort_by: ThreadSort = "created_at",
        sort_order: Literal["asc", "desc"] = "desc",
        with_state: bool = True,
    ) -> list[ThreadView]:
        """The owner's threads matching the filters."""
        records = await self.store.search_threads(
            owner_id,
            metadata=metadata,
            status=status,
            ids=_valid_ids(ids) if ids is not None else None,
            limit=limit,
            offset=offset,
            sort_by=sort_by,
            sort_order=sort_order,
        )
        views: list[ThreadView] = []
        for record in records:
            snapshot = (
                await self._snapshot(record.thread_id)
                if with_state
                else StateSnapshot(
                    {}, (), _thread_config(record.thread_id), None, None, None, (), ()
                )
            )
            views.append(ThreadView(record, snapshot))
        return views

    async def count_threads(self, owner_id: str, *, status: ThreadStatus | None = None) -> int:
        """How many threads the owner has."""
        return await self.store.count_threads(owner_id, status=status)

    # --- state --------------------------------------------------------------------------

    async def get_state(
        self, owner_id: str, thread_id: str, checkpoint_id: str | None = None
    ) -> StateSnapshot:
        """The thread's state now, or at one of its checkpoints."""
        record = await self.store.get_thread(self._tid(thread_id), owner_id)
        if checkpoint_id:
            await self._require_checkpoint(record.thread_id, checkpoint_id)
        return await self._snapshot(record.thread_id, checkpoint_id)

    async def update_state(
        self,
        owner_id: str,
        thread_id: str,
        values: Any,
        *,
        as_node: str | None = None,
        checkpoint_id: str | None = None,
    ) -> RunnableConfig:
        """Write a new checkpoint with ``values`` applied as if ``as_node`` ran; from a past
        checkpoint this forks the thread. Conflict while a run is active."""
        record = await self.store.get_thread(self._tid(thread_id), owner_id)
        tid = record.thread_id
        if await self.store.active_runs(tid):
            raise Conflict(f"thread {tid} has an active run; wait for it or cancel it")
        graph = self.backends.graph
        if as_node is not None and as_node not in graph.nodes:
            raise InvalidInput(f"as_node: the graph has no node {as_node!r}", field="as_node")
        if checkpoint_id:
            await self._require_checkpoint(tid, checkpoint_id)
        try:
            config = await graph.aupdate_state(
                _thread_config(tid, checkpoint_id), values, as_node=as_node
            )
        except (InvalidUpdateError, KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"values: cannot apply the update: {exc}", field="values") from exc
        snapshot = await self._snapshot(tid)
        status: ThreadStatus = "interrupted" if snapshot.next and snapshot.interrupts else "idle"
        await self.store.set_thread_status(tid, status)
        return config

    async def history(
        self,
        owner_id: str,
        thread_id: str,
        *,
        limit: int = 10,
        before: str | None = None,
        metadata: dict[str, Any] | None = None,
        checkpoint_id: str | None = None,
    ) -> list[StateSnapshot]:
        """The thread's past states, newest first."""
        record = await self.store.get_thread(self._tid(thread_id), owner_id)
        tid = record.thread_id
        states: list[StateSnapshot] = []
        async for snapshot in self.backends.graph.aget_state_history(
            _thread_config(tid, checkpoint_id),
            filter=metadata or None,
            before=_thread_config(tid, before) if before else None,
            limit=limit,
        ):
            states.append(snapshot)
        return states

    async def _snapshot(self, thread_id: str, checkpoint_id: str | None = None) -> StateSnapshot:
        return await self.backends.graph.aget_state(_thread_config(thread_id, checkpoint_id))

    async def _require_checkpoint(self, thread_id: str, checkpoint_id: str) -> None:
        found = await self.backends.checkpointer.aget_tuple(
            _thread_config(thread_id, checkpoint_id)
        )
        if found is None:
            raise NotFound("checkpoint", checkpoint_id)

    @staticmethod
    def _tid(thread_id: str) -> str:
        try:
            return normalise_id(thread_id, "thread_id")
        except InvalidInput:
            # An id that cannot exist is simply not found (as LangGraph Server answers).
            raise NotFound("thread", thread_id) from None

    # --- replay -------------------------------------------------------------------------

    async def traced_run(self, owner_id: str, run_id: str) -> TracedRun:
        """A recorded run of one of the owner's threads; NotFound for anyone else's."""
        rid = self._rid(run_id)
        try:
            traced = await self.backends.tracing.store.get_run(rid)
        except NotFound:
            raise NotFound("run", run_id) from None
        try:
            await self.store.get_thread(traced.thread_id, owner_id)
        except NotFound:
            raise NotFound("run", run_id) from None
        return traced

    async def replay(
        self,
        owner_id: str,
        run_id: str,
        *,
        recorded: Sequence[str] | None = None,
        live: Sequence[str] | None = None,
        from_checkpoint_id: str | None = None,
        stream_mode: Sequence[str] = ("values",),
    ) -> RunRecord:
        """Queue a replay of the owner's recorded run on a new thread (see
        :mod:`server.runs.tracing`); the run record names the new thread."""
        source = await self.traced_run(owner_id, run_id)
        thread_id, request = await self.replay_request(
            owner_id,
            source,
            recorded=recorded,
            live=live,
            from_checkpoint_id=from_checkpoint_id,
            stream_mode=stream_mode,
        )
        return await self.create_run(owner_id, thread_id, request)

    async def replay_request(
        self,
        owner_id: str,
        source: TracedRun,
        *,
        recorded: Collection[str] | None = None,
        live: Collection[str] | None = None,
        from_checkpoint_id: str | None = None,
        stream_mode: Sequence[str] = ("values",),
        thread_id: str | None = None,
    ) -> tuple[str, RunRequest]:
        """A new thread of ``owner_id`` (``thread_id``, or a fresh one) and the run that
        replays ``source`` on it."""
        spec = ReplaySpec(
            source_run_id=source.run_id,
            recorded_agents=replay_agents(recorded, live),
            live_from_step=await live_from_step(
                self.backends.checkpointer, source.thread_id, from_checkpoint_id
            ),
            from_checkpoint_id=from_checkpoint_id,
        )
        # The replay writes the source's book on its own thread: recorded when queued,
        # checked before the thread exists so a refused book leaves no empty thread.
        steps = await self.backends.tracing.replay_steps(source.run_id)
        first = next((s.input for s in steps if s.input), None)
        book = None if first is None else self._book(first)
        view = await self.create_thread(
            owner_id,
            thread_id=thread_id,
            metadata={"replay_of_run": source.run_id, "replay_of_thread": source.thread_id},
        )
        kwargs = RunKwargs(input={}, stream_mode=tuple(stream_mode), replay=spec.to_json())
        request = RunRequest(
            assistant_id=ASSISTANT_ID,
            kwargs=kwargs,
            metadata={"replay_of_run": source.run_id},
            book=book,
        )
        return view.thread.thread_id, request

    # --- runs ---------------------------------------------------------------------------

    def validate(self, kwargs: RunKwargs) -> BookRequest | None:
        """Check what a run asks for against the graph; InvalidInput names the field.
        An input that asks for a book comes back as the validated request."""
        for mode in kwargs.stream_mode:
            if mode not in STREAM_MODES:
                raise InvalidInput(
                    f"stream_mode {mode!r} is not supported; use any of {', '.join(STREAM_MODES)}",
                    field="stream_mode",
                )
        nodes = set(self.backends.graph.nodes)
        for name in ("interrupt_before", "interrupt_after"):
            value = getattr(kwargs, name)
            if value is None or value == "*":
                continue
            unknown = [n for n in value if n not in nodes]
            if unknown:
                raise InvalidInput(f"{name}: the graph has no node {unknown[0]!r}", field=name)
        if kwargs.input is not None and kwargs.command is not None:
            raise InvalidInput("give either input or command, not both", field="command")
        if kwargs.command is not None:
            extra = set(kwargs.command) - {"resume", "update", "goto"}
            if extra:
                raise InvalidInput(
                    f"command.{sorted(extra)[0]} is not a command field", field="command"
                )
        return None if kwargs.input is None else self._book(kwargs.input)

    @staticmethod
    def _book(value: Any) -> BookRequest | None:
        if not isinstance(value, dict):
            raise InvalidInput("input must be an object {premise, chapters, ...}", field="input")
        extra = set(value) - INPUT_KEYS
        if extra:
            key = sorted(extra)[0]
            raise InvalidInput(f"input.{key} is not an input of the novel graph", field="input")
        if not value:
            return None  # a run that goes on from the thread's state (a replay, a retry)
        return validate_request(
            value.get("premise"),
            value.get("chapters"),
            value.get("genre"),
            value.get("pause_after") or (),
            value.get("language"),
            value.get("max_revisions"),
        )

    async def create_run(self, owner_id: str, thread_id: str, request: RunRequest) -> RunRecord:
        """Queue a run on the thread (creating the thread with ``if_not_exists="create"``)."""
        run = await self._queue(owner_id, thread_id, request)
        self.engine.wake_workers()
        return run

    async def execute(
        self,
        owner_id: str,
        thread_id: str,
        request: RunRequest,
        on_event: Callable[[RunEvent], None] | None = None,
    ) -> Executed:
        """Queue a run and execute it in this process, now: the CLI's way to run the graph.

        The run is validated, recorded, executed, traced and streamed exactly as a run the
        API queues (the same worker code), only claimed by this process from the start so
        no other worker takes it. ``on_event`` gets its events as they come. Cancelled
        (Ctrl-C), the run goes back to the queue for :meth:`resume_here`.
        """
        worker = Worker(self.engine)
        run = await self._queue(
            owner_id, thread_id, request, claimed_by=(worker.worker_id, self.engine.options.lease_s)
        )
        return await self._execute_here(worker, run, on_event)

    async def resume_here(
        self,
        owner_id: str,
        thread_id: str,
        on_event: Callable[[RunEvent], None] | None = None,
    ) -> Executed | None:
        """Take up the thread's unfinished run (stopped by Ctrl-C, or its process died) and
        execute it here from its last checkpoint; None when it has none. Conflict while
        another process still holds it."""
        tid = self._tid(thread_id)
        active = [
            run
            for status in ("running", "pending")
            for run in await self.store.list_runs(tid, owner_id, limit=1, status=status)
        ]
        if not active:
            return None
        worker = Worker(self.engine)
        held = active[0]
        run = await self.store.claim(
            worker.worker_id,
            self.engine.options.lease_s,
            run_id=held.run_id,
            # A run whose process died on this machine (killed CLI) goes on at once.
            dead_worker=held.worker_id if died_here(held.worker_id) else None,
        )
        if run is None:
            raise Conflict(
                f"run {active[0].run_id} of {tid} is being executed by another process; "
                "wait for it to finish (or for its lease to expire if that process died)",
                thread_id=tid,
                run_id=active[0].run_id,
            )
        return await self._execute_here(worker, run, on_event)

    async def _execute_here(
        self, worker: Worker, run: RunRecord, on_event: Callable[[RunEvent], None] | None
    ) -> Executed:
        follower: asyncio.Task[None] | None = None
        if on_event is not None:
            follower = asyncio.create_task(self._follow(run.run_id, on_event))
        try:
            error = await worker.execute(run)
        finally:
            if follower is not None:
                # Every event is on the bus once the run ended; the follower drains them.
                with suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(follower), END_GRACE_S)
                follower.cancel()
                with suppress(asyncio.CancelledError):
                    await follower
        finished = await self.store.find_run(run.run_id)
        return Executed(finished or run, error)

    async def _follow(self, run_id: str, on_event: Callable[[RunEvent], None]) -> None:
        async for event in self.engine.bus.subscribe(run_id, wait_s=60.0):
            if event is None:
                continue
            if event.event == END:
                return
            on_event(event)

    async def _queue(
        self,
        owner_id: str,
        thread_id: str,
        request: RunRequest,
        *,
        claimed_by: tuple[str, float] | None = None,
    ) -> RunRecord:
        """The one way a run is recorded: validated, checked against the thread, the
        novel it asks for recorded, its first event published before any worker can emit
        one."""
        checked = self.validate(request.kwargs)
        book = request.book if request.book is not None else checked
        if book is not None and request.kwargs.replay is None:
            # What the graph gets is what was validated: stripped, language detected. (A
            # replay's graph input is the source's, step by step.)
            kwargs = replace(request.kwargs, input=dict(book.graph_input()))
            request = replace(request, kwargs=kwargs)
        tid = normalise_id(thread_id, "thread_id")
        try:
            await self.store.get_thread(tid, owner_id)
        except NotFound:
            # The store decides below: 404, or a new thread (with no checkpoint yet).
            if request.kwargs.checkpoint_id:
                raise NotFound("checkpoint", request.kwargs.checkpoint_id) from None
        else:
            if request.kwargs.checkpoint_id:
                await self._require_checkpoint(tid, request.kwargs.checkpoint_id)
            command = request.kwargs.command
            if command is not None and "resume" in command:
                check_resume(await self._snapshot(tid), command["resume"])
        recorded = book is not None and await self._record_novel(tid, book)
        run_id = str(uuid.uuid4())
        # Published before the run exists, so no worker's event can come before it.
        bus = self.engine.bus
        try:
            await bus.publish(run_id, [("metadata", dumps({"run_id": run_id, "attempt": 1}))])
            run, stopped = await self.store.create_run(
                run_id=run_id,
                thread_id=tid,
                owner_id=owner_id,
                assistant_id=request.assistant_id,
                metadata=request.metadata,
                kwargs=request.kwargs,
                multitask_strategy=request.multitask_strategy,
                if_not_exists=request.if_not_exists,
                after_seconds=request.after_seconds,
                thread_metadata={"graph_id": GRAPH_ID},
                claimed_by=claimed_by,
            )
        except BaseException:
            with suppress(ScribeError):
                await bus.delete(run_id)
                if recorded:
                    # A novel without its run would be a book nobody writes.
                    await self.backends.store.delete_novel(tid)
            raise
        await self._after_stop_requests(stopped)
        return run

    async def _record_novel(self, thread_id: str, book: BookRequest) -> bool:
        """Record the novel a run asks for, unless the thread has one (the novels API
        created it, or this is the book's second start); True when recorded here. The
        one write of a novel's request: the graph reads it, never writes it."""
        try:
            await self.backends.store.create_novel(
                thread_id, book.premise, book.chapters, book.genre, status="paused"
            )
        except Conflict:
            return False
        return True

    async def _after_stop_requests(self, stopped: list[RunRecord]) -> None:
        for other in stopped:
            if other.status == "running" and other.cancel_action is not None:
                self.engine.cancel_locally(other.run_id, other.cancel_action)
            elif other.status != "running":
                # A pending run stopped at once: its stream ends here.
                await self.engine.bus.publish(other.run_id, [(END, "null")])
                self.engine.run_changed(other.run_id)

    async def get_run(self, owner_id: str, thread_id: str, run_id: str) -> RunRecord:
        """The run; NotFound for another owner's."""
        return await self.store.get_run(self._tid(thread_id), self._rid(run_id), owner_id)

    async def list_runs(
        self,
        owner_id: str,
        thread_id: str,
        *,
        limit: int = 10,
        offset: int = 0,
        status: RunStatus | None = None,
    ) -> list[RunRecord]:
        """The thread's runs, newest first."""
        return await self.store.list_runs(
            self._tid(thread_id), owner_id, limit=limit, offset=offset, status=status
        )

    async def delete_run(self, owner_id: str, thread_id: str, run_id: str) -> None:
        """Delete a run that is not running."""
        await self.store.delete_run(self._tid(thread_id), self._rid(run_id), owner_id)
        self.engine.run_changed(run_id)

    async def cancel_run(
        self,
        owner_id: str,
        thread_id: str,
        run_id: str,
        *,
        action: CancelAction = "interrupt",
        wait: bool = False,
    ) -> None:
        """Stop a run. ``interrupt`` keeps what it did (status interrupted); ``rollback``
        puts the thread back where it was before the run and deletes the run. With
        ``wait`` this returns once the run has actually stopped."""
        tid, rid = self._tid(thread_id), self._rid(run_id)
        run = await self.store.request_cancel(tid, rid, owner_id, action)
        await self._after_stop_requests([run])
        if wait:
            await self.wait_finished(owner_id, tid, rid)

    async def wait_finished(self, owner_id: str, thread_id: str, run_id: str) -> RunRecord | None:
        """Block until the run has ended; None when it was deleted (rolled back)."""
        tid, rid = self._tid(thread_id), self._rid(run_id)
        while True:
            try:
                run = await self.store.get_run(tid, rid, owner_id)
            except NotFound:
                return None
            if run.finished:
                return run
            await self.engine.wait_run_changed(rid, self.engine.options.poll_s)

    async def output(self, owner_id: str, thread_id: str, run: RunRecord | None) -> dict[str, Any]:
        """What ``wait``/``join`` return: the thread's values (with ``__interrupt__``), or
        ``{"__error__": {"error", "message"}}`` for a failed run."""
        if run is not None and run.status in ("error", "timeout"):
            name, _, message = (run.error or "Error: run failed").partition(": ")
            return {"__error__": {"error": name, "message": message or name}}
        record = await self.store.get_thread(self._tid(thread_id), owner_id)
        return values_with_interrupts(await self._snapshot(record.thread_id))

    async def check_stream(
        self,
        owner_id: str,
        thread_id: str,
        run_id: str,
        *,
        last_event_id: str | None = None,
        stream_mode: Sequence[str] | None = None,
    ) -> RunRecord:
        """What :meth:`events` would refuse, checked before a response starts."""
        run = await self.get_run(owner_id, thread_id, run_id)
        self.engine.bus.check_id(last_event_id)
        self._event_names(stream_mode)
        return run

    async def events(
        self,
        owner_id: str,
        thread_id: str,
        run_id: str,
        *,
        last_event_id: str | None = None,
        stream_mode: Sequence[str] | None = None,
    ) -> AsyncIterator[RunEvent | None]:
        """The run's events after ``last_event_id``, live, ending with ``end``; ``None``
        every ``sse_heartbeat_s`` of silence (time for a heartbeat).

        Events lost or kept elsewhere (a worker in another process without Redis, an
        expired stream) do not hang a client: once the run's row says it ended, the
        missing ``error``/``end`` are made up from it.
        """
        tid, rid = self._tid(thread_id), self._rid(run_id)
        await self.store.get_run(tid, rid, owner_id)
        wanted = self._event_names(stream_mode)
        options = self.engine.options
        wait_s = min(options.sse_heartbeat_s, CHECK_EVERY_S)
        loop = asyncio.get_running_loop()
        quiet_since = loop.time()
        ended_at: float | None = None
        saw_error = False
        async for event in self.engine.bus.subscribe(rid, after=last_event_id, wait_s=wait_s):
            if event is not None:
                quiet_since = loop.time()
                saw_error = saw_error or event.event == "error"
                if wanted is None or event.event in wanted or event.event in CONTROL_EVENTS:
                    yield event
                continue
            if loop.time() - quiet_since >= options.sse_heartbeat_s:
                quiet_since = loop.time()
                yield None
            try:
                run: RunRecord | None = await self.store.get_run(tid, rid, owner_id)
            except NotFound:
                run = None
            except StoreUnavailable:
                continue  # the queue's database is away for now: keep the stream open
            if run is not None and not run.finished:
                ended_at = None
                continue
            if ended_at is None:
                ended_at = loop.time()
                continue
            if loop.time() - ended_at < END_GRACE_S:
                continue
            if run is not None and run.status in ("error", "timeout") and not saw_error:
                name, _, message = (run.error or "Error").partition(": ")
                yield RunEvent("", "error", dumps({"error": name, "message": message or name}))
            yield RunEvent("", END, "null")
            return

    @staticmethod
    def _event_names(stream_mode: Sequence[str] | None) -> set[str] | None:
        if not stream_mode:
            return None
        names: set[str] = set()
        for mode in stream_mode:
            if mode not in GRAPH_MODE_OF:
                raise InvalidInput(f"stream_mode {mode!r} is not supported", field="stream_mode")
            names.add(EVENT_OF_GRAPH_MODE[GRAPH_MODE_OF[mode]])
        return names

    @staticmethod
    def _rid(run_id: str) -> str:
        try:
            return normalise_id(run_id, "run_id")
        except InvalidInput:
            raise NotFound("run", run_id) from None
