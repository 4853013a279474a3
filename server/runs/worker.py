"""Workers: claim runs from the queue, execute them with the graph, publish their events.

A worker holds a lease on each run it executes and renews it with heartbeats; a run whose
worker died is claimed again once the lease expired and continues from its last
checkpoint (the graph runs with ``durability="sync"``, and nodes are replay-safe, so no
accepted chapter is written twice). A heartbeat also brings cancel requests made in other
processes; requests made in this process arrive at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig
from langgraph.types import Command, Send

from errors import (
    BudgetExceeded,
    Conflict,
    NotFound,
    ScribeError,
    StorageError,
    StoreUnavailable,
)
from graphs.novel import GRAPH_ID
from memory.app.port import AppStore, NovelStatus, status_move
from memory.db import unavailable
from memory.runs.models import (
    GRAPH_MODE_OF,
    BaseCheckpoint,
    CancelAction,
    RunRecord,
    RunStatus,
    ThreadStatus,
)
from memory.traces.port import Budget, ReplaySpec, TracedRunStatus
from server.runs.engine import LOCAL_OWNER, RECURSION_LIMIT, RunEngine
from server.runs.gates import check_resume
from server.runs.serde import dumps

log = logging.getLogger("scribe.runs")

PUBLISH_BATCH = 256
REPUBLISH_S = 120.0
"""How long a run's events wait for the bus to come back before they are dropped."""
REPUBLISH_RETRY_S = 0.5
MAX_BACKOFF_S = 30.0
"""The longest wait between two claims while the queue's store is out of reach."""
StopReason = Literal["cancel", "lost", "shutdown", "killed"]


def _now() -> float:
    return asyncio.get_running_loop().time()


def default_worker_id() -> str:
    """``host:pid:random``: unique per worker, readable in the runs table."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def died_here(worker_id: str | None) -> bool:
    """Whether ``worker_id`` (see :func:`default_worker_id`) names a worker of a process
    on this machine that no longer exists: its runs need not wait for their leases."""
    host, _, rest = (worker_id or "").partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname()[:40] or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return _zombie(pid)


def _zombie(pid: int) -> bool:
    """A process that exited but was not reaped yet is dead for our purposes."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return False


class _Publisher:
    """Hands a run's events to the bus in order, in batches, off the graph's path."""

    def __init__(self, engine: RunEngine, run_id: str) -> None:
        self._engine = engine
        self._run_id = run_id
        self._pending: list[tuple[str, str]] = []
        self._ready = asyncio.Event()
        self._closed = False
        self._task = asyncio.create_task(self._pump(), name=f"publish:{run_id}")

    def emit(self, event: str, data: str) -> None:
        """Queue one event (never blocks the graph)."""
        self._pending.append((event, data))
        self._ready.set()

    async def _pump(self) -> None:
        loop = asyncio.get_running_loop()
        down_since: float | None = None
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._pending:
                batch = self._pending[:PUBLISH_BATCH]
                try:
                    await self._engine.bus.publish(self._run_id, batch)
                except StoreUnavailable as exc:
                    # The bus is restarting: hold the events (in order) and try again, so
                    # a client that rejoins with Last-Event-ID misses none.
                    down_since = down_since if down_since is not None else loop.time()
                    if loop.time() - down_since <= REPUBLISH_S:
                        await asyncio.sleep(REPUBLISH_RETRY_S)
                        continue
                    log.warning("run %s: %d events lost: %s", self._run_id, len(batch), exc)
                except ScribeError as exc:
                    # Events are a view of the run; the run itself is in the checkpoints.
                    log.warning("run %s: %d events lost: %s", self._run_id, len(batch), exc)
                else:
                    down_since = None
                del self._pending[: len(batch)]
            if self._closed:
                return

    async def close(self) -> None:
        """Publish everything queued, then stop."""
        self._closed = True
        self._ready.set()
        await self._task

    def abandon(self) -> None:
        """Stop without publishing what is queued (the worker is dying)."""
        self._task.cancel()


@dataclass
class _Control:
    """How the execution of one run was asked to stop, if it was."""

    task: asyncio.Task[None] | None = None
    reason: StopReason | None = None
    action: CancelAction | None = None

    def stop(self, reason: StopReason, action: CancelAction | None = None) -> None:
        # The first reason wins: a kill after a cancel is still a kill for the database,
        # but a cancel never overrides shutdown or death.
        if self.reason is None or reason == "killed":
            self.reason = reason
            self.action = action
        if self.task is not None and not self.task.done():
            self.task.cancel()


class Worker:
    """Executes up to ``concurrency`` runs at once until stopped."""

    def __init__(
        self, engine: RunEngine, *, concurrency: int = 1, worker_id: str | None = None
    ) -> None:
        if concurrency < 1:
            raise ValueError("a worker needs a concurrency of at least 1")
        self.engine = engine
        self.worker_id = worker_id or default_worker_id()
        self._concurrency = concurrency
        self._slots = asyncio.Semaphore(concurrency)
        self._loop_task: asyncio.Task[None] | None = None
        self._runs: dict[str, asyncio.Task[None]] = {}
        self._controls: dict[str, _Control] = {}
        self._stopping = False
        self._errors: dict[str, BaseException] = {}
        self._waited: set[str] = set()
        self._hand_back: set[str] = set()
        """Runs stopped here because a store was out of reach, to give back to the queue
        once it answers: an outage is not the run's fault, so it must not cost an attempt
        (a reclaim after an expired lease counts one, as after a crash)."""
        self.claim_failing_since: float | None = None
        """When claiming runs began to fail (monotonic seconds), while it still fails."""

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Begin claiming runs."""
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self._loop(), name=f"worker:{self.worker_id}")

    async def stop(self) -> None:
        """Stop claiming; runs still executing go back to the queue (another worker, or
        this process after a restart, continues them from their last checkpoint)."""
        await self._halt("shutdown")

    async def kill(self) -> None:
        """Die like a crashed process: stop everything and write nothing more. The runs
        it held are reclaimed by another worker once their leases expire."""
        await self._halt("killed")

    async def _halt(self, reason: StopReason) -> None:
        self._stopping = True
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        for control in list(self._controls.values()):
            control.stop(reason)
        tasks = list(self._runs.values())
        if reason == "killed":
            # Wherever each run is (even mid-transaction), it stops there.
            for task in tasks:
                task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def executing(self) -> set[str]:
        """Ids of the runs this worker executes now."""
        return set(self._runs)

    # --- claiming -----------------------------------------------------------------------

    async def _loop(self) -> None:
        options = self.engine.options
        failures = 0
        while not self._stopping:
            await self._slots.acquire()
            try:
                await self._give_back()
                run = await self.engine.store.claim(
                    self.worker_id, options.lease_s, executing=set(self._runs)
                )
            except Exception as exc:
                # A store outage must not end the loop: the worker keeps trying, more
                # slowly, and takes up expired leases again once the store is back.
                self._slots.release()
                failures += 1
                self.claim_failing_since = self.claim_failing_since or _now()
                delay = min(options.poll_s * 2**failures, MAX_BACKOFF_S)
                log.warning(
                    "worker %s: cannot claim runs (%s); next try in %.1f s",
                    self.worker_id,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            failures = 0
            self.claim_failing_since = None
            if run is None:
                self._slots.release()
                await self.engine.wait_for_work(options.poll_s)
                continue
            task = asyncio.create_task(self._handle(run), name=f"run:{run.run_id}")
            self._runs[run.run_id] = task
            task.add_done_callback(functools.partial(self._done, run.run_id))

    async def _give_back(self) -> None:
        """Hand the runs an outage stopped back to the queue (see ``_hand_back``); a run
        another worker took meanwhile is left to it."""
        for run_id in sorted(self._hand_back - set(self._runs)):
            await self.engine.store.release(run_id, self.worker_id)
            self._hand_back.discard(run_id)

    def _done(self, run_id: str, _task: asyncio.Task[None]) -> None:
        self._runs.pop(run_id, None)
        self._slots.release()

    async def execute(self, run: RunRecord) -> BaseException | None:
        """Execute ``run``, claimed by this worker, to its end here (the CLI's way); the
        error that ended the graph, if one did.

        Cancelled (Ctrl-C), the run stops at once and goes back to the queue, as on a
        graceful shutdown, so ``scribe resume`` takes it up again from its last checkpoint.
        """
        task = asyncio.create_task(self._handle(run), name=f"run:{run.run_id}")
        self._runs[run.run_id] = task
        self._waited.add(run.run_id)
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            control = self._controls.get(run.run_id)
            if control is not None:
                control.stop("shutdown")
            await asyncio.gather(task, return_exceptions=True)
            raise
        finally:
            self._runs.pop(run.run_id, None)
            self._waited.discard(run.run_id)
        return self._errors.pop(run.run_id, None)

    async def run_once(self) -> RunRecord | None:
        """Claim one run and execute it to the end here (tests, tools); None if none due."""
        run = await self.engine.store.claim(self.worker_id, self.engine.options.lease_s)
        if run is not None:
            await self._handle(run)
        return run

    # --- executing one run --------------------------------------------------------------

    def _executing_here(self, run_id: str) -> bool:
        """Whether :meth:`execute` waits for this run (and wants its error)."""
        return run_id in self._waited

    async def _handle(self, run: RunRecord) -> None:
        control = _Control()
        self._controls[run.run_id] = control
        self.engine.register_canceller(run.run_id, lambda action: control.stop("cancel", action))
        try:
            await self._execute(run, control)
        except Exception:
            log.exception("worker %s: run %s failed in the engine", self.worker_id, run.run_id)
        finally:
            self._controls.pop(run.run_id, None)
            self.engine.unregister_canceller(run.run_id)
            if control.reason != "killed":
                self.engine.run_changed(run.run_id)

    async def _execute(self, run: RunRecord, control: _Control) -> None:
        engine = self.engine
        if run.cancel_action is not None:
            # Reclaimed after its worker died while a cancel was pending: just finish it.
            await self._finish_cancelled(run, run.cancel_action)
            return
        if run.attempts > engine.options.max_attempts:
            message = f"run abandoned after {run.attempts - 1} attempts (its workers died)"
            await self._finish_failed(run, "error", "RunAbandoned", message)
            return
        # A run that executed before (its base is saved then) may have written
        # checkpoints: it continues from them, whether it crashed or was handed back.
        again = run.kwargs.base is not None or run.attempts > 1
        if run.kwargs.base is None:
            base = await engine.janitor.base(run.thread_id)
            run = await engine.store.save_base(run.run_id, self.worker_id, base)
        publisher = _Publisher(engine, run.run_id)
        if run.attempts > 1:
            publisher.emit("metadata", dumps({"run_id": run.run_id, "attempt": run.attempts}))
        await record_novel_status(engine.backends.store, run.thread_id, "running")
        graph_input, config = await self._prepare(run, again=again)
        replay = ReplaySpec.from_json(run.kwargs.replay) if run.kwargs.replay else None
        await engine.backends.tracing.begin(
            run_id=run.run_id,
            thread_id=run.thread_id,
            owner_id=run.owner_id,
            source="replay" if replay else "cli" if run.owner_id == LOCAL_OWNER else "api",
            input=run.kwargs.input,
            command=run.kwargs.command,
            start_checkpoint_id=run.kwargs.base.checkpoint_id if run.kwargs.base else None,
            budget=Budget.from_json(run.kwargs.budget),
            replay=replay,
        )
        control.task = asyncio.create_task(
            self._stream(run, graph_input, config, publisher), name=f"graph:{run.run_id}"
        )
        if control.reason is not None:
            control.task.cancel()  # asked to stop while it was being prepared
        finished = asyncio.Event()
        heartbeat = asyncio.create_task(self._heartbeat(run, control, finished))
        try:
            await asyncio.wait({control.task})
        except asyncio.CancelledError:
            # The worker itself is being torn down without ceremony: die quietly.
            control.stop("killed")
            publisher.abandon()
            raise
        finally:
            # Not cancelled (unless dying): a heartbeat cancelled inside its transaction
            # could leave SQLite's write lock with a connection nobody rolls back.
            finished.set()
            if control.reason == "killed":
                heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        await self._conclude(run, control, control.task, publisher)
        await self._trace_end(run, control, control.task)

    async def _trace_end(self, run: RunRecord, control: _Control, task: asyncio.Task[None]) -> None:
        """Record how the run ended in its trace (not when it moves to another worker)."""
        failure = None if task.cancelled() else task.exception()
        if control.reason in ("killed", "lost", "shutdown") or (
            failure is not None and unavailable(failure)
        ):
            # The run goes on elsewhere (or here, later): its trace is not finished.
            self.engine.backends.tracing.recorder.end_run(run.run_id)
            return
        status: TracedRunStatus
        reason: str | None = None
        if task.cancelled():
            status, reason = "interrupted", f"cancelled ({control.action or 'interrupt'})"
        elif (error := task.exception()) is not None:
            cause = error.error if isinstance(error, _Refused) else error
            status = "budget_exceeded" if isinstance(cause, BudgetExceeded) else "error"
            reason = cause.message if isinstance(cause, ScribeError) else str(cause)
        else:
            snapshot = await self.engine.backends.graph.aget_state(_thread_config(run.thread_id))
            status = "interrupted" if snapshot.next else "success"
        try:
            await self.engine.backends.tracing.end(run.run_id, status, reason)
        except NotFound:
            return  # the thread (and its traces) was deleted meanwhile
        except ScribeError as exc:
            log.warning("run %s: trace not finished: %s", run.run_id, exc)

    async def _conclude(
        self,
        run: RunRecord,
        control: _Control,
        task: asyncio.Task[None],
        publisher: _Publisher,
    ) -> None:
        if control.reason == "killed":
            publisher.abandon()
            return
        if control.reason == "lost":
            await publisher.close()
            if run.run_id in self._hand_back:
                log.warning(
                    "worker %s: run %s stopped, its lease could not be renewed; it resumes "
                    "once the store answers",
                    self.worker_id,
                    run.run_id,
                )
            else:
                log.warning("worker %s lost run %s to another worker", self.worker_id, run.run_id)
            return
        if control.reason == "shutdown":
            await publisher.close()
            await self.engine.store.release(run.run_id, self.worker_id)
            return
        if task.cancelled():
            await publisher.close()
            await self._finish_cancelled(run, control.action or "interrupt")
            return
        error = task.exception()
        if error is not None and self._executing_here(run.run_id):
            self._errors[run.run_id] = error.error if isinstance(error, _Refused) else error
        if isinstance(error, _Refused):
            # Refused before the graph ran: the thread is as it was.
            await publisher.close()
            refused = error.error
            await self._finish_failed(
                run,
                "error",
                type(refused).__name__,
                refused.message,
                thread_status=await self._thread_status_now(run.thread_id),
            )
            return
        if error is not None and unavailable(error):
            # A store is out of reach: the run is not at fault. This worker gives it back
            # to the queue once the store answers (it keeps its attempts); if this worker
            # dies first, another takes it up when its lease expires, as after a crash.
            await publisher.close()
            self._hand_back.add(run.run_id)
            log.warning(
                "worker %s: run %s stopped, a store is out of reach (%s); it resumes once "
                "its lease expires",
                self.worker_id,
                run.run_id,
                error,
            )
            return
        if isinstance(error, _RunTimedOut):
            await publisher.close()
            await self._finish_failed(run, "timeout", "TimeoutError", str(error))
            return
        if isinstance(error, BudgetExceeded):
            # Stopped before a model call, at a node boundary: resumable as it stands.
            await publisher.close()
            await record_novel_status(self.engine.backends.store, run.thread_id, "paused")
            await self._finish_failed(
                run,
                "interrupted",
                "BudgetExceeded",
                error.message,
                thread_status=await self._thread_status_now(run.thread_id),
            )
            return
        if error is not None:
            await publisher.close()
            name = type(error).__name__
            await self._finish_failed(run, "error", name, str(error) or name)
            return
        snapshot = await self.engine.backends.graph.aget_state(_thread_config(run.thread_id))
        paused = bool(snapshot.next)
        status: RunStatus = "interrupted" if snapshot.interrupts or paused else "success"
        thread_status: ThreadStatus = "interrupted" if paused else "idle"
        await publisher.close()
        # The novel's status first: whoever sees the run finished sees the novel in step.
        done = bool(snapshot.values.get("done"))
        await record_novel_status(
            self.engine.backends.store,
            run.thread_id,
            "paused" if paused else "completed" if done else None,
        )
        if await self.engine.store.finish(run.run_id, self.worker_id, status, thread_status):
            await self._end(run.run_id, status)

    async def _prepare(self, run: RunRecord, *, again: bool) -> tuple[Any, RunnableConfig]:
        """The graph input and config. A reclaimed run that already wrote a checkpoint
        continues from the thread's head with no input; otherwise it starts as asked."""
        kwargs = run.kwargs
        graph_input: Any = kwargs.input
        checkpoint_id = kwargs.checkpoint_id
        if kwargs.command is not None:
            graph_input = _command(kwargs.command)
        if again and await self._wrote_checkpoint(run):
            graph_input, checkpoint_id = None, None
        user = kwargs.config
        configurable: dict[str, Any] = {
            **dict(user.get("configurable") or {}),
            "thread_id": run.thread_id,
        }
        if checkpoint_id:
            configurable["checkpoint_id"] = checkpoint_id
        metadata: dict[str, Any] = {
            **dict(user.get("metadata") or {}),
            **run.metadata,
            "run_id": run.run_id,
            "thread_id": run.thread_id,
            "assistant_id": run.assistant_id,
            "graph_id": GRAPH_ID,
            "user_id": run.owner_id,
            "run_attempt": run.attempts,
        }
        config: RunnableConfig = {
            "configurable": configurable,
            "metadata": metadata,
            "run_id": uuid.UUID(run.run_id),
            "recursion_limit": int(user.get("recursion_limit") or RECURSION_LIMIT),
        }
        if user.get("tags"):
            config["tags"] = [str(t) for t in user["tags"]]
        return graph_input, config

    async def _wrote_checkpoint(self, run: RunRecord) -> bool:
        saver = self.engine.backends.checkpointer
        async for _ in saver.alist(
            {"configurable": {"thread_id": run.thread_id}}, filter={"run_id": run.run_id}, limit=1
        ):
            return True
        return False

    async def _stream(
        self, run: RunRecord, graph_input: Any, config: RunnableConfig, publisher: _Publisher
    ) -> None:
        engine = self.engine
        kwargs = run.kwargs
        if isinstance(graph_input, Command) and kwargs.command and "resume" in kwargs.command:
            # Checked again here: the gate may have changed while the run was queued.
            snapshot = await engine.backends.graph.aget_state(_thread_config(run.thread_id))
            try:
                if kwargs.strict_resume and not snapshot.interrupts:
                    raise Conflict(
                        f"thread {run.thread_id} waits at no interrupt; nothing to resume",
                        thread_id=run.thread_id,
                    )
                check_resume(snapshot, kwargs.command["resume"])
            except ScribeError as exc:
                raise _Refused(exc) from exc
        modes = list(dict.fromkeys(GRAPH_MODE_OF[m] for m in kwargs.stream_mode))
        timeout = engine.options.run_timeout_s
        scope = asyncio.timeout(timeout)
        tracing = engine.backends.tracing
        replay = ReplaySpec.from_json(kwargs.replay) if kwargs.replay else None
        inputs: list[Any] = [graph_input]
        first = 0
        context = engine.backends.context
        if replay is not None:
            # A replay re-executes the source thread's runs in order. Each step's index is
            # in its checkpoints' metadata, so a reclaimed replay (graph_input None: it
            # wrote checkpoints) finishes the step it was in and goes on from there.
            steps = [
                _command(step.command) if step.command is not None else step.input
                for step in await tracing.replay_steps(replay.source_run_id)
            ]
            inputs = steps
            resumed: str | None = None
            head_checkpoint: str | None = None
            if graph_input is None:
                head = await engine.backends.graph.aget_state(_thread_config(run.thread_id))
                done = (head.metadata or {}).get(REPLAY_STEP_KEY)
                first = int(done) if isinstance(done, int) else 0
                inputs = [None, *steps[first + 1 :]]
                resumed = run.run_id
                head_checkpoint = (head.config.get("configurable") or {}).get("checkpoint_id")
            context = await tracing.context_for(
                context, replay, resumed_run_id=resumed, head_checkpoint_id=head_checkpoint
            )
        try:
            async with scope:
                for offset, step_input in enumerate(inputs):
                    step_config = config
                    if replay is not None:
                        metadata = {
                            **(config.get("metadata") or {}),
                            REPLAY_STEP_KEY: first + offset,
                        }
                        step_config = {**config, "metadata": metadata}
                    async for mode, chunk in engine.backends.graph.astream(
                        step_input,
                        step_config,
                        context=context,
                        stream_mode=modes,  # type: ignore[arg-type]
                        interrupt_before=_nodes(kwargs.interrupt_before),
                        interrupt_after=_nodes(kwargs.interrupt_after),
                        durability=kwargs.durability,
                    ):
                        publisher.emit(str(mode), dumps(_chunk(str(mode), chunk)))
        except TimeoutError as exc:
            if scope.expired():
                raise _RunTimedOut(f"run exceeded its time limit of {timeout:g} s") from exc
            raise

    async def _heartbeat(self, run: RunRecord, control: _Control, finished: asyncio.Event) -> None:
        options = self.engine.options
        loop = asyncio.get_running_loop()
        renewed = loop.time()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(options.heartbeat_s):
                    await finished.wait()
            if finished.is_set():
                return
            try:
                beat = await self.engine.store.heartbeat(
                    run.run_id, self.worker_id, options.lease_s
                )
            except Exception as exc:
                log.warning(
                    "worker %s: heartbeat of run %s failed: %s", self.worker_id, run.run_id, exc
                )
                if loop.time() - renewed > options.lease_s:
                    # Another worker may own it by now; two on one thread must not run.
                    if unavailable(exc):
                        self._hand_back.add(run.run_id)
                    control.stop("lost")
                    return
                continue
            renewed = loop.time()
            if not beat.owned:
                control.stop("lost")
                return
            if beat.cancel_action is not None:
                control.stop("cancel", beat.cancel_action)
                return

    # --- endings ------------------------------------------------------------------------

    async def _thread_status_after_stop(self, thread_id: str) -> ThreadStatus:
        snapshot = await self.engine.backends.graph.aget_state(_thread_config(thread_id))
        return "interrupted" if snapshot.interrupts else "idle"

    async def _finish_cancelled(self, run: RunRecord, action: CancelAction) -> None:
        engine = self.engine
        if action == "rollback":
            beat = await engine.store.heartbeat(run.run_id, self.worker_id, engine.options.lease_s)
            if not beat.owned:
                return  # another worker (or a deletion) took it: its checkpoints are not ours
            base = run.kwargs.base or BaseCheckpoint(None)
            await engine.janitor.rollback(run.thread_id, run.run_id, base)
            status = await self._thread_status_after_stop(run.thread_id)
            if await engine.store.discard(run.run_id, self.worker_id, status):
                await record_novel_status(engine.backends.store, run.thread_id, "paused")
                await self._end(run.run_id, "rolled_back")
            return
        status = await self._thread_status_after_stop(run.thread_id)
        await record_novel_status(engine.backends.store, run.thread_id, "paused")
        if await engine.store.finish(run.run_id, self.worker_id, "interrupted", status):
            await self._end(run.run_id, "interrupted")

    async def _thread_status_now(self, thread_id: str) -> ThreadStatus:
        snapshot = await self.engine.backends.graph.aget_state(_thread_config(thread_id))
        return "interrupted" if snapshot.next else "idle"

    async def _finish_failed(
        self,
        run: RunRecord,
        status: RunStatus,
        name: str,
        message: str,
        *,
        thread_status: ThreadStatus | None = None,
    ) -> None:
        """End the run as failed; the thread goes to ``error`` unless told otherwise."""
        engine = self.engine
        if thread_status is None:
            await record_novel_status(
                engine.backends.store, run.thread_id, "failed", f"{name}: {message}"
            )
        owned = await engine.store.finish(
            run.run_id, self.worker_id, status, thread_status or "error", error=f"{name}: {message}"
        )
        if owned:
            await engine.bus.publish(
                run.run_id, [("error", dumps({"error": name, "message": message}))]
            )
            await self._end(run.run_id, status)

    async def _end(self, run_id: str, status: str) -> None:
        try:
            await self.engine.bus.publish(run_id, [("end", "null")])
        except ScribeError as exc:
            log.warning("run %s ended (%s) but its end event was lost: %s", run_id, status, exc)


REPLAY_STEP_KEY = "replay_step"
"""Checkpoint metadata of a replay run: which of the source's runs wrote the checkpoint."""


class _RunTimedOut(Exception):
    """The run's own time limit passed (not a timeout inside a node)."""


class _Refused(Exception):
    """The run was refused before the graph ran (e.g. a gate would reject its answer)."""

    def __init__(self, error: ScribeError) -> None:
        super().__init__(error.message)
        self.error = error


async def record_novel_status(
    store: AppStore, novel_id: str, status: NovelStatus | None, error: str | None = None
) -> None:
    """The one writer of a novel's status after its creation, in step with its runs: a
    move the state machine does not allow (see :data:`NOVEL_STATUS_MOVES`) is ignored, so
    a late or repeated report never undoes a later one (nothing leaves ``completed``)."""
    if status is None:
        return
    try:
        record = await store.get_novel(novel_id)
        if status != record.status and status_move(record.status, status):
            await store.update_novel(novel_id, status=status, error=error)
    except NotFound:
        return  # intake has not created it yet
    except StorageError as exc:
        log.warning("novel %s: status not updated: %s", novel_id, exc)


def _thread_config(thread_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread_id}}


def _nodes(value: Iterable[str] | str | None) -> list[str] | Literal["*"] | None:
    if value is None:
        return None
    if value == "*":
        return "*"
    return list(value)


def _command(data: dict[str, Any]) -> Command[Any]:
    goto: Any = data.get("goto")
    if isinstance(goto, dict):
        goto = Send(str(goto["node"]), goto.get("input"))
    elif isinstance(goto, list):
        goto = [
            Send(str(g["node"]), g.get("input")) if isinstance(g, dict) else str(g) for g in goto
        ]
    kwargs: dict[str, Any] = {}
    if "resume" in data:
        kwargs["resume"] = data["resume"]
    if data.get("update") is not None:
        kwargs["update"] = data["update"]
    if goto is not None:
        kwargs["goto"] = goto
    return Command(**kwargs)


def _chunk(mode: str, chunk: Any) -> Any:
    if mode == "messages" and isinstance(chunk, tuple):
        return list(chunk)
    return chunk
