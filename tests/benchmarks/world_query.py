"""Benchmark of world-memory reads on every backend available (prints figures; asserts nothing).

    uv run python tests/benchmarks/world_query.py [--calls 50] [--backends sql-sqlite,neo4j]

Loads one synthetic world (500 entities, 5,000 facts spread over 50 chapters: attribute
changes, moves, alliances and their ends, set-ups and pay-offs) into each backend, then
reports the load time (which, on a fresh Neo4j, includes the JVM warming up) and the p50/p95
latency of ``world_as_of`` at several chapters, plus ``neighbourhood`` and ``lookup``, each
measured after untimed warm-up calls. Backends:

* ``sql-sqlite``: a temporary SQLite file;
* ``sql-postgres``: ``SCRIBE_TEST_POSTGRES_URL``, else a throwaway server from
  ``tests/services/postgres.py`` (a fresh database either way, dropped afterwards);
* ``neo4j``: ``SCRIBE_TEST_NEO4J_URL`` (+ ``_USER``/``_PASSWORD``), else a throwaway
  server from ``tests/services/neo4j.py`` (the novel is dropped afterwards).

A backend that cannot be had is reported as unavailable and skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from memory.world.port import (  # noqa: E402 - the path above makes the repo importable
    EntityKind,
    EntitySpec,
    FactEnd,
    FactSpec,
    SetupSpec,
    WorldChanges,
    WorldMemory,
)
from tests.services.base import ServiceUnavailable  # noqa: E402

KINDS: tuple[EntityKind, ...] = ("character", "location", "faction", "item", "rule", "event")
STATUSES = ("alive", "wounded", "missing", "captured", "hidden", "exiled", "dead")
MOODS = ("calm", "wary", "grim", "hopeful", "furious", "sly")
Opener = Callable[[Path], AbstractAsyncContextManager[WorldMemory]]


@dataclass(frozen=True)
class World:
    """A synthetic world: one batch per chapter, chapter 0 first."""

    batches: tuple[WorldChanges, ...]
    entities: int
    facts: int


def synthetic_world(entities: int, facts: int, chapters: int, seed: int = 7) -> World:
    """A deterministic world of ``entities`` entities and about ``facts`` asserted facts.

    Chapter 0 introduces every entity with a status and a mood (two facts each); the rest
    of the facts are spread evenly over chapters 1..``chapters``: status and mood changes,
    moves between locations (an exclusive relation), alliances and memberships, and a few
    ends of those, with set-ups planted and paid off along the way.
    """
    rng = random.Random(seed)
    keys = [f"e{i}" for i in range(entities)]
    kinds = {key: KINDS[i % len(KINDS)] for i, key in enumerate(keys)}
    places = [k for k in keys if kinds[k] == "location"]
    factions = [k for k in keys if kinds[k] == "faction"]
    people = [k for k in keys if kinds[k] == "character"]
    seed_entities = tuple(
        EntitySpec(
            key=key,
            kind=kinds[key],
            name=f"{kinds[key].title()} {key[1:]}",
            aliases=(f"the {kinds[key]} number {key[1:]}",),
            description=f"Entity {key} of the benchmark world.",
            fixed={"origin": rng.choice(("north", "south", "east", "west"))},
            mutable={"status": rng.choice(STATUSES), "mood": rng.choice(MOODS)},
        )
        for key in keys
    )
    batches = [WorldChanges(entities=seed_entities)]
    total = 2 * entities
    per_chapter = max(1, (facts - total) // max(1, chapters))
    for chapter in range(1, chapters + 1):
        asserted: list[FactSpec] = []
        ended: list[FactEnd] = []
        for _ in range(per_chapter):
            roll = rng.random()
            who = rng.choice(people)
            if roll < 0.35:
                asserted.append(FactSpec(who, "status", value=rng.choice(STATUSES)))
            elif roll < 0.55:
                asserted.append(FactSpec(rng.choice(keys), "mood", value=rng.choice(MOODS)))
            elif roll < 0.80:
                asserted.append(FactSpec(who, "located_in", object=rng.choice(places)))
            elif roll < 0.92:
                asserted.append(FactSpec(who, "ally_of", object=rng.choice(people)))
            else:
                asserted.append(FactSpec(who, "member_of", object=rng.choice(factions)))
        for _ in range(per_chapter // 20):
            ended.append(FactEnd(rng.choice(people), "ally_of"))
        setups = (
            SetupSpec(
                f"setup-{chapter}",
                f"Something planted in chapter {chapter}",
                chapter,
                min(chapters, chapter + 5),
                (rng.choice(people), rng.choice(places)),
            ),
        )
        paid = (f"setup-{chapter - 5}",) if chapter > 5 else ()
        batches.append(
            WorldChanges(facts=tuple(asserted), ended=tuple(ended), setups=setups, paid_off=paid)
        )
        total += len(asserted)
    return World(batches=tuple(batches), entities=entities, facts=total)


# --- backends -------------------------------------------------------------------------


@asynccontextmanager
async def sql_sqlite(workdir: Path) -> AsyncIterator[WorldMemory]:
    """The SQL backend on a temporary SQLite file."""
    from memory.db import make_engine
    from memory.world.sql import SqlWorldMemory

    engine = make_engine(f"sqlite+aiosqlite:///{workdir / 'world.sqlite3'}")
    memory = SqlWorldMemory(engine)
    try:
        await memory.setup()
        yield memory
    finally:
        await memory.close()
        await engine.dispose()


@asynccontextmanager
async def sql_postgres(workdir: Path) -> AsyncIterator[WorldMemory]:
    """The SQL backend on a fresh database of the environment's or a throwaway server."""
    from memory.db import make_engine
    from memory.world.sql import SqlWorldMemory
    from server.settings import to_sqlalchemy_url
    from tests.services import postgres

    server = postgres.start(workdir)
    url = postgres.create_database(server.url)
    engine = make_engine(to_sqlalchemy_url(url))
    memory = SqlWorldMemory(engine)
    try:
        await memory.setup()
        yield memory
    finally:
        await memory.close()
        await engine.dispose()
        postgres.drop_database(server.url, postgres.database_name(url))
        server.stop()


@asynccontextmanager
async def neo4j(workdir: Path) -> AsyncIterator[WorldMemory]:
    """The Neo4j backend on the environment's or a throwaway server."""
    from memory.world.neo4j import Neo4jWorldMemory
    from tests.services import neo4j as neo4j_service

    server = neo4j_service.start(workdir, java_options=neo4j_service.STEADY_JAVA_OPTIONS)
    if server.started_here:
        print(f"  (neo4j started in {server.startup_seconds:.1f} s, {server.extra['source']})")
    else:
        print(f"  (neo4j at {server.url})")
    memory = Neo4jWorldMemory.connect(
        server.url, server.extra.get("user", "neo4j"), server.extra.get("password")
    )
    try:
        await memory.setup()
        yield memory
    finally:
        await memory.close()
        server.stop()


BACKENDS: dict[str, Opener] = {
    "sql-sqlite": sql_sqlite,
    "sql-postgres": sql_postgres,
    "neo4j": neo4j,
}


# --- measuring ------------------------------------------------------------------------


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def _report(label: str, seconds: list[float]) -> None:
    ms = [s * 1000 for s in seconds]
    print(
        f"  {label:<28} p50 {_percentile(ms, 0.5):8.2f} ms   p95 {_percentile(ms, 0.95):8.2f} ms"
        f"   mean {statistics.mean(ms):8.2f} ms   (n={len(ms)})"
    )


async def _timed(call: Callable[[], Awaitable[object]], calls: int) -> list[float]:
    times: list[float] = []
    for _ in range(calls):
        started = time.perf_counter()
        await call()
        times.append(time.perf_counter() - started)
    return times


async def bench(
    name: str, opener: Opener, world: World, calls: int, warmup: int, workdir: Path
) -> None:
    """Load the world into one backend and time its reads."""
    print(f"{name}:")
    novel = str(uuid.uuid4())
    try:
        async with opener(workdir) as memory:
            try:
                started = time.perf_counter()
                for chapter, batch in enumerate(world.batches):
                    await memory.apply(novel, chapter, batch)
                load = time.perf_counter() - started
                print(
                    f"  load {world.entities} entities / {world.facts} facts in "
                    f"{len(world.batches)} batches: {load:.2f} s "
                    f"({load / len(world.batches) * 1000:.0f} ms per batch)"
                )
                last = len(world.batches) - 1
                for chapter in sorted({0, last // 5, last // 2, last}):
                    snapshot = await memory.world_as_of(novel, chapter)
                    read = partial(memory.world_as_of, novel, chapter)
                    # Untimed calls first: caches, query plans and (on Neo4j) the JVM's JIT.
                    await _timed(read, warmup)
                    times = await _timed(read, calls)
                    _report(
                        f"world_as_of({chapter}) {len(snapshot.facts)} facts",
                        times,
                    )
                around = partial(memory.neighbourhood, novel, "e0", last)
                await _timed(around, warmup)
                _report(f"neighbourhood(e0, {last})", await _timed(around, calls))
                find = partial(memory.lookup, novel, "the character number 0")
                await _timed(find, warmup)
                _report("lookup(alias)", await _timed(find, calls))
            finally:
                await memory.drop_novel(novel)
    except ServiceUnavailable as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"  unavailable: {first_line}")


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=20, help="untimed calls before each")
    parser.add_argument("--entities", type=int, default=500)
    parser.add_argument("--facts", type=int, default=5000)
    parser.add_argument("--chapters", type=int, default=50)
    args = parser.parse_args()
    world = synthetic_world(args.entities, args.facts, args.chapters)
    print(
        f"synthetic world: {world.entities} entities, {world.facts} facts, "
        f"{args.chapters} chapters; {args.calls} timed calls per figure after "
        f"{args.warmup} untimed ones"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.backends.split(","):
            opener = BACKENDS.get(name.strip())
            if opener is None:
                print(f"{name}: unknown backend (choose from {', '.join(BACKENDS)})")
                continue
            workdir = Path(tmp) / name.strip()
            workdir.mkdir()
            asyncio.run(bench(name.strip(), opener, world, args.calls, args.warmup, workdir))


if __name__ == "__main__":
    main()
