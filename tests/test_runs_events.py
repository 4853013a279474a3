"""The event buses: ids, replay after an id, live delivery, quiet ticks, the end, expiry."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from errors import InvalidInput
from memory.redis import RedisService
from memory.runs.events import EventBus, InProcessEventBus, RedisEventBus, RunEvent


@pytest.fixture(params=["inproc", "redis"])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[EventBus]:
    """A bus with a short expiry (0.5 s)."""
    if request.param == "inproc":
        yield InProcessEventBus(ttl_s=0.5)
        return
    url: str = request.getfixturevalue("redis_url")
    prefix: str = request.getfixturevalue("redis_key_prefix")
    async with RedisService.from_url(url, prefix=prefix) as redis:
        yield RedisEventBus(redis, ttl_s=0.5)


async def _read(bus: EventBus, run_id: str, after: str | None = None) -> list[RunEvent]:
    found: list[RunEvent] = []
    async with asyncio.timeout(10):
        async for event in bus.subscribe(run_id, after=after, wait_s=0.1):
            if event is not None:
                found.append(event)
    return found


async def test_replay_and_resume_after_an_id(bus: EventBus) -> None:
    run_id = str(uuid.uuid4())
    ids = await bus.publish(run_id, [("metadata", '{"run_id":1}'), ("values", '{"a":1}')])
    ids += await bus.publish(run_id, [("updates", '{"n":{}}'), ("end", "null")])
    assert len(set(ids)) == 4
    everything = await _read(bus, run_id)
    assert [(e.id, e.event, e.data) for e in everything] == [
        (ids[0], "metadata", '{"run_id":1}'),
        (ids[1], "values", '{"a":1}'),
        (ids[2], "updates", '{"n":{}}'),
        (ids[3], "end", "null"),
    ]
    assert [e.id for e in await _read(bus, run_id, after=ids[1])] == ids[2:]
    # Reading does not consume: the finished stream replays again.
    assert [e.id for e in await _read(bus, run_id)] == ids


async def test_live_delivery_and_quiet_ticks(bus: EventBus) -> None:
    run_id = str(uuid.uuid4())
    await bus.publish(run_id, [("metadata", "{}")])
    seen: list[RunEvent | None] = []

    async def read() -> None:
        async for event in bus.subscribe(run_id, wait_s=0.1):
            seen.append(event)

    reader = asyncio.create_task(read())
    await asyncio.sleep(0.35)
    await bus.publish(run_id, [("custom", '{"step":1}')])
    await asyncio.sleep(0.05)
    await bus.publish(run_id, [("end", "null")])
    async with asyncio.timeout(5):
        await reader
    events = [e.event for e in seen if e is not None]
    assert events == ["metadata", "custom", "end"]
    assert None in seen, "silence is reported while waiting"
    assert seen.index(None) < len(seen) - 2, "the ticks came before the live events"


async def test_events_expire_after_the_last_one(bus: EventBus) -> None:
    run_id = str(uuid.uuid4())
    await bus.publish(run_id, [("metadata", "{}"), ("end", "null")])
    await asyncio.sleep(0.8)
    quiet = [event async for event in _first(bus.subscribe(run_id, wait_s=0.1))]
    assert quiet == [None], "nothing is left after the expiry"


async def _first(events: AsyncIterator[RunEvent | None]) -> AsyncIterator[RunEvent | None]:
    async for event in events:
        yield event
        return


async def test_unknown_ids_are_refused(bus: EventBus) -> None:
    with pytest.raises(InvalidInput):
        bus.check_id("not-an-id")
    with pytest.raises(InvalidInput):
        await _read(bus, str(uuid.uuid4()), after="not-an-id")
    bus.check_id(None)
