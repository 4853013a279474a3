"""Run events: a port and two buses (in-process, Redis Streams).

Every event a run produces gets an id; a subscriber reads a run's events in order from
the start or after a given id (an SSE ``Last-Event-ID``), so a client that reconnects
misses nothing. A run's events end with ``end`` and are kept for ``ttl_s`` seconds after
the last one, so the stream of a finished run still replays.

The in-process bus serves the embedded default (API and workers in one process). With
Redis configured, workers in other processes publish to Redis Streams and every API
process reads from them.
"""

from __future__ import annotations

import asyncio
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from errors import InvalidInput, StoreUnavailable
from memory.redis import RedisService, redis_errors

END = "end"
_REDIS_ID = re.compile(r"^\d+-\d+$")
READ_BATCH = 500
MAX_BLOCK_S = 1.0
REJOIN_S = 120.0
"""How long a reader waits for Redis to come back before its stream fails."""
RETRY_S = 0.5


@dataclass(frozen=True)
class RunEvent:
    """One event of a run: its id, its SSE event name and its data as JSON text."""

    id: str
    event: str
    data: str


class EventBus(ABC):
    """Publish a run's events and read them back, live or replayed."""

    @abstractmethod
    async def publish(self, run_id: str, events: Sequence[tuple[str, str]]) -> list[str]:
        """Append ``(event, json_text)`` pairs in order; returns their ids."""

    @abstractmethod
    def subscribe(
        self, run_id: str, *, after: str | None = None, wait_s: float = 15.0
    ) -> AsyncIterator[RunEvent | None]:
        """The run's events after ``after`` (all when None), in order, as they come.

        Yields ``None`` whenever nothing arrived for ``wait_s`` seconds (a chance to send
        a heartbeat or check on the run) and stops after the ``end`` event. Raises
        InvalidInput for an id this bus never hands out.
        """

    @abstractmethod
    def check_id(self, event_id: str | None) -> None:
        """Raise InvalidInput for an event id this bus never hands out."""

    @abstractmethod
    async def delete(self, run_id: str) -> None:
        """Forget the run's events."""

    async def close(self) -> None:
        """Release resources (the Redis bus does not own its connection)."""
        return


@dataclass
class _Stream:
    events: list[RunEvent] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    expiry: asyncio.TimerHandle | None = None


class InProcessEventBus(EventBus):
    """Events kept in memory for one process; ids count up per run from ``1``."""

    def __init__(self, *, ttl_s: float = 3600.0) -> None:
        self._ttl_s = ttl_s
        self._streams: dict[str, _Stream] = {}

    def _stream(self, run_id: str) -> _Stream:
        stream = self._streams.get(run_id)
        if stream is None:
            stream = self._streams[run_id] = _Stream()
            self._arm(run_id, stream)
        return stream

    def _arm(self, run_id: str, stream: _Stream) -> None:
        # Kept ttl_s after the last event (or after a subscriber asked for an empty one).
        if stream.expiry is not None:
            stream.expiry.cancel()
        loop = asyncio.get_running_loop()
        stream.expiry = loop.call_later(self._ttl_s, self._expire, run_id, stream)

    async def publish(self, run_id: str, events: Sequence[tuple[str, str]]) -> list[str]:
        """Append events and wake the run's subscribers."""
        stream = self._stream(run_id)
        ids: list[str] = []
        for name, data in events:
            event_id = str(len(stream.events) + 1)
            stream.events.append(RunEvent(event_id, name, data))
            ids.append(event_id)
        self._arm(run_id, stream)
        stream.changed.set()
        stream.changed = asyncio.Event()
        return ids

    def _expire(self, run_id: str, stream: _Stream) -> None:
        if self._streams.get(run_id) is stream:
            del self._streams[run_id]

    async def subscribe(
        self, run_id: str, *, after: str | None = None, wait_s: float = 15.0
    ) -> AsyncIterator[RunEvent | None]:
        """See :meth:`EventBus.subscribe`."""
        position = _parse_counter(after)
        while True:
            stream = self._stream(run_id)
            changed = stream.changed
            while position < len(stream.events):
                event = stream.events[position]
                position += 1
                yield event
                if event.event == END:
                    return
            try:
                async with asyncio.timeout(wait_s):
                    await changed.wait()
            except TimeoutError:
                yield None

    def check_id(self, event_id: str | None) -> None:
        """Ids here are positive counters."""
        _parse_counter(event_id)

    async def delete(self, run_id: str) -> None:
        """Drop the run's events."""
        stream = self._streams.pop(run_id, None)
        if stream is not None and stream.expiry is not None:
            stream.expiry.cancel()

    async def close(self) -> None:
        """Drop every stream."""
        for stream in self._streams.values():
            if stream.expiry is not None:
                stream.expiry.cancel()
        self._streams.clear()


def _parse_counter(after: str | None) -> int:
    if after is None or after == "":
        return 0
    try:
        value = int(after)
    except ValueError:
        raise InvalidInput(f"unknown event id {after!r}", field="Last-Event-ID") from None
    if value < 0:
        raise InvalidInput(f"unknown event id {after!r}", field="Last-Event-ID")
    return value


class RedisEventBus(EventBus):
    """Events in one Redis Stream per run (``<prefix>run:<id>:events``), ids from Redis."""

    def __init__(self, redis: RedisService, *, ttl_s: float = 3600.0) -> None:
        self._redis = redis
        self._ttl_ms = max(1, int(ttl_s * 1000))

    def _key(self, run_id: str) -> str:
        return self._redis.key("run", run_id, "events")

    async def publish(self, run_id: str, events: Sequence[tuple[str, str]]) -> list[str]:
        """XADD every event and renew the stream's expiry, in one round trip."""
        if not events:
            return []
        key = self._key(run_id)
        with redis_errors("run events", "publish"):
            async with self._redis.client.pipeline(transaction=False) as pipe:
                for name, data in events:
                    pipe.xadd(key, {"event": name, "data": data})
                pipe.pexpire(key, self._ttl_ms)
                results = await pipe.execute()
        return [str(r) for r in results[: len(events)]]

    async def subscribe(
        self, run_id: str, *, after: str | None = None, wait_s: float = 15.0
    ) -> AsyncIterator[RunEvent | None]:
        """See :meth:`EventBus.subscribe` (XREAD BLOCK from the last id seen)."""
        self.check_id(after)
        last = after or "0-0"
        key = self._key(run_id)
        # Each XREAD blocks less than the client's socket timeout; quiet spells add up.
        block_ms = max(1, int(min(wait_s, MAX_BLOCK_S) * 1000))
        loop = asyncio.get_running_loop()
        quiet_since = loop.time()
        down_since: float | None = None
        while True:
            try:
                with redis_errors("run events", "read"):
                    answer: Any = await self._redis.client.xread(
                        {key: last}, count=READ_BATCH, block=block_ms
                    )
            except StoreUnavailable:
                # Redis is restarting: the stream stays open and reads on from the last id
                # once it is back (a Redis with persistence lost nothing meanwhile).
                down_since = down_since if down_since is not None else loop.time()
                if loop.time() - down_since > REJOIN_S:
                    raise
                if loop.time() - quiet_since >= wait_s:
                    quiet_since = loop.time()
                    yield None
                await asyncio.sleep(RETRY_S)
                continue
            down_since = None
            if not answer:
                if loop.time() - quiet_since >= wait_s:
                    quiet_since = loop.time()
                    yield None
                continue
            quiet_since = loop.time()
            # RESP2 answers a list of [key, entries], RESP3 a mapping key -> entries.
            streams = answer.items() if isinstance(answer, dict) else answer
            for _key, entries in streams:
                for entry_id, fields in entries:
                    last = str(entry_id)
                    event = RunEvent(last, str(fields["event"]), str(fields["data"]))
                    yield event
                    if event.event == END:
                        return

    def check_id(self, event_id: str | None) -> None:
        """Ids here are Redis stream ids (``<ms>-<seq>``)."""
        if event_id and not _REDIS_ID.match(event_id):
            raise InvalidInput(f"unknown event id {event_id!r}", field="Last-Event-ID")

    async def delete(self, run_id: str) -> None:
        """DEL the run's stream."""
        await self._redis.client.delete(self._key(run_id))
