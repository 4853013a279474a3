"""Benchmark of streamed runs over HTTP (prints figures; asserts nothing).

    uv run python tests/benchmarks/runs_api.py [--quick] [--clients 1,10,100]
        [--targets embedded,postgres-redis,langgraph-dev] [--runs-per-client 2]

Every run writes a small book (1 chapter of about 150 words, offline model streaming at a
fixed token rate) and is started with the official ``langgraph_sdk`` async client:
``client.runs.stream(thread, "novel", input=..., stream_mode=[...])``. For each number of
concurrent clients, every client (its own SDK client, its own threads: one per run) does
``--runs-per-client`` runs one after the other, all clients starting together. Reported:

* runs/s: successful runs of the batch / wall time of the batch (threads are created
  before the clock starts);
* TTFE: time to first event, from sending the request to the first SSE event. Both
  servers send LangGraph's ``metadata`` event first (``scribe serve`` as soon as the run is
  accepted, ``langgraph dev`` when a worker starts it), so two figures are given: ``ttfe``
  counts it (first event of any kind) and ``ttfe*`` excludes it (first event the graph
  produced, which includes any wait in the run queue: the figure comparable across
  servers);
* run time: request to the end of the stream.

Percentiles are nearest-rank (the p99 of fewer than 100 samples is their maximum). One
untimed warm-up run per target comes first.

Targets:

* ``embedded``: ``scribe serve`` in a subprocess on a temporary data folder (SQLite,
  Qdrant local, in-process run events);
* ``postgres-redis``: ``scribe serve`` with ``DATABASE_URL`` and ``REDIS_URL``: the URLs
  given by ``--database-url``/``--redis-url``, else throwaway servers from
  ``tests/services`` (a fresh database, dropped afterwards);
* ``langgraph-dev``: the reference, ``langgraph dev`` (``langgraph-cli[inmem]``: the
  in-memory LangGraph API server) serving the same graph through
  ``tests/benchmarks/langgraph_dev/graph.py``. langgraph-api is not a project dependency:
  it is installed on first use into a cached virtual environment
  (``~/.cache/infinitescribe/langgraph-dev``, see ``--langgraph-venv``) together with the
  project (editable) and the project's own langgraph/langchain-core versions. It runs
  with ``--allow-blocking`` (its blocking-call detector rejects the stores' synchronous
  file I/O, which ``scribe serve`` also does) and without tracing or analytics.

Both kinds of server get the same run concurrency (``--workers``: ``SCRIBE_WORKER_CONCURRENCY``
and ``langgraph dev --n-jobs-per-worker``). Every process started here (servers, throwaway
Postgres and Redis) is stopped on exit, including on Ctrl-C and SIGTERM. A target that
cannot be had is reported as unavailable with the reason, and the others still run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import fcntl
import hashlib
import json
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, cast

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.services.base import ServiceUnavailable, free_port  # noqa: E402 - path above

if TYPE_CHECKING:
    from langgraph_sdk.client import LangGraphClient
    from langgraph_sdk.schema import StreamMode

TARGETS = ("embedded", "postgres-redis", "langgraph-dev")
DEFAULT_CLIENTS = (1, 10, 100)
QUICK_CLIENTS = (1, 10)
DEFAULT_STREAM_MODE = ("values", "updates", "messages-tuple", "custom")
PREMISE = "A lighthouse keeper named Ada Quill finds a brass key that opens a door under the sea."
PASSWORD = "correct horse battery staple"
LANGGRAPH_DEV_GRAPH = ROOT / "tests" / "benchmarks" / "langgraph_dev" / "graph.py"
DEFAULT_LANGGRAPH_VENV = Path("~/.cache/infinitescribe/langgraph-dev").expanduser()
# Pinned to what resolves next to the project's own langgraph (checked against PyPI):
# a newer langgraph-api may need other versions of the project's dependencies.
LANGGRAPH_DEV_REQUIREMENTS = (
    "langgraph-cli[inmem]==0.4.40",
    "langgraph-api==0.16.7",
    "langgraph-runtime-inmem==0.36.7",
)
# The reference must run the graph on the same LangGraph as the project: pin these to the
# versions installed here.
_SHARED_PACKAGES = (
    "langgraph",
    "langgraph-checkpoint",
    "langgraph-checkpoint-sqlite",
    "langgraph-checkpoint-postgres",
    "langgraph-prebuilt",
    "langgraph-sdk",
    "langchain-core",
)
_APP_ENV_PREFIXES = ("SCRIBE_", "OPENAI_", "LANGGRAPH_", "LANGSMITH_", "LANGCHAIN_")
_APP_ENV_NAMES = ("DATABASE_URL", "REDIS_URL", "QDRANT_URL", "QDRANT_API_KEY", "NEO4J_URL")
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
INSTALL_TIMEOUT_S = 900.0
_PR_SET_PDEATHSIG = 1


# --- the workload and its figures ---------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """What every run does and how the servers are configured."""

    chapters: int = 1
    words_per_chapter: int = 150
    tokens_per_second: float = 500.0
    runs_per_client: int = 2
    workers: int = 10
    stream_mode: tuple[str, ...] = DEFAULT_STREAM_MODE
    run_timeout_s: float = 600.0
    warm_up: bool = True
    """One untimed run per target first (stores opened, code paths warm)."""

    def graph_input(self) -> dict[str, Any]:
        """The input of one run."""
        return {"premise": PREMISE, "chapters": self.chapters, "genre": "fantasy"}

    def server_env(self) -> dict[str, str]:
        """The settings every target's graph runs with."""
        return {
            "SCRIBE_OFFLINE_TOKENS_PER_SECOND": repr(self.tokens_per_second),
            "SCRIBE_WORDS_PER_CHAPTER": str(self.words_per_chapter),
        }


@dataclass(frozen=True)
class RunSample:
    """One streamed run as its client saw it (seconds from sending the request)."""

    ok: bool
    run_s: float
    first_event_s: float | None
    first_data_s: float | None
    events: int
    error: str | None = None


@dataclass(frozen=True)
class Batch:
    """``clients`` concurrent clients against one target."""

    target: str
    clients: int
    wall_s: float
    samples: tuple[RunSample, ...]
    load: float = 0.0
    """The machine's 1-minute load average when the batch ended (other work skews figures)."""

    @property
    def runs(self) -> int:
        """Runs attempted."""
        return len(self.samples)

    @property
    def errors(self) -> int:
        """Runs that failed, timed out or did not finish the book."""
        return sum(not s.ok for s in self.samples)

    @property
    def runs_per_s(self) -> float:
        """Successful runs per second of the batch's wall time."""
        return (self.runs - self.errors) / self.wall_s if self.wall_s > 0 else 0.0

    def _ok(self, attribute: str) -> list[float]:
        values = (getattr(s, attribute) for s in self.samples if s.ok)
        return [v for v in values if v is not None]

    def ttfe(self, q: float, *, metadata_included: bool) -> float | None:
        """Percentile ``q`` of the time to first event (metadata counted or not), seconds."""
        return percentile(self._ok("first_event_s" if metadata_included else "first_data_s"), q)

    def run_time(self, q: float) -> float | None:
        """Percentile ``q`` of the run time, seconds."""
        return percentile(self._ok("run_s"), q)

    @property
    def first_error(self) -> str | None:
        """One error message, to show under the table."""
        return next((s.error for s in self.samples if s.error), None)


@dataclass(frozen=True)
class TargetReport:
    """The batches of one target, or why it could not run."""

    target: str
    batches: tuple[Batch, ...] = ()
    unavailable: str | None = None
    notes: tuple[str, ...] = ()


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100); ``None`` without values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


# --- the client side ----------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """A server ready for runs, with the headers a client needs."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)


def _client(endpoint: Endpoint) -> LangGraphClient:
    from langgraph_sdk import get_client

    # Queued runs may stay silent for a while on the reference: reads wait for the run.
    return get_client(
        url=endpoint.url, headers=endpoint.headers, api_key=None, timeout=(30, 600, 60, 60)
    )


async def _one_run(client: LangGraphClient, thread_id: str, workload: Workload) -> RunSample:
    first_event: float | None = None
    first_data: float | None = None
    events = 0
    error: str | None = None
    last_values: Any = None
    started = time.perf_counter()
    try:
        async with asyncio.timeout(workload.run_timeout_s):
            async for part in client.runs.stream(
                thread_id,
                "novel",
                input=workload.graph_input(),
                stream_mode=cast("list[StreamMode]", list(workload.stream_mode)),
            ):
                now = time.perf_counter() - started
                events += 1
                if first_event is None:
                    first_event = now
                if first_data is None and part.event != "metadata":
                    first_data = now
                if part.event == "error" and error is None:
                    error = f"error event: {json.dumps(part.data)[:200]}"
                elif part.event == "values":
                    last_values = part.data
    except TimeoutError:
        error = f"no end of stream within {workload.run_timeout_s:.0f} s"
    except Exception as exc:  # any client-side failure is one failed run, reported
        error = f"{type(exc).__name__}: {exc}"[:300]
    run_s = time.perf_counter() - started
    finished = isinstance(last_values, dict) and last_values.get("done") is True
    if error is None and not finished:
        error = "the stream ended before the book was done"
    return RunSample(error is None, run_s, first_event, first_data, events, error)


async def run_batch(endpoint: Endpoint, target: str, clients: int, workload: Workload) -> Batch:
    """``clients`` SDK clients, each doing its runs one after the other, all at once."""
    sdk_clients = [_client(endpoint) for _ in range(clients)]
    try:
        threads = await asyncio.gather(
            *(
                asyncio.gather(*(c.threads.create() for _ in range(workload.runs_per_client)))
                for c in sdk_clients
            )
        )

        async def client_runs(client: LangGraphClient, own: Sequence[Any]) -> list[RunSample]:
            return [await _one_run(client, t["thread_id"], workload) for t in own]

        started = time.perf_counter()
        results = await asyncio.gather(
            *(client_runs(c, own) for c, own in zip(sdk_clients, threads, strict=True))
        )
        wall = time.perf_counter() - started
    finally:
        await asyncio.gather(*(c.aclose() for c in sdk_clients), return_exceptions=True)
    samples = tuple(sample for per_client in results for sample in per_client)
    return Batch(target, clients, wall, samples, os.getloadavg()[0])


async def _warm_up(endpoint: Endpoint, workload: Workload) -> RunSample:
    client = _client(endpoint)
    try:
        thread = await client.threads.create()
        return await _one_run(client, thread["thread_id"], workload)
    finally:
        await client.aclose()


def measure(
    endpoint: Endpoint, target: str, clients: Sequence[int], workload: Workload
) -> TargetReport:
    """The batches of one ready target (after an untimed warm-up run), as a report."""
    if workload.warm_up:
        warm = asyncio.run(_warm_up(endpoint, workload))
        if not warm.ok:
            return TargetReport(target, unavailable=f"the warm-up run failed: {warm.error}")
        _say(f"  {target}: warm-up run done in {warm.run_s:.1f} s")
    batches = []
    for count in clients:
        batch = asyncio.run(run_batch(endpoint, target, count, workload))
        batches.append(batch)
        _say(
            f"  {target}: {count} client(s): {batch.runs - batch.errors}/{batch.runs} runs "
            f"in {batch.wall_s:.1f} s"
        )
    return TargetReport(target, tuple(batches))


# --- processes ----------------------------------------------------------------------------


class _Clock:
    """When the benchmark started, for the progress lines."""

    started = time.monotonic()


def _say(message: str) -> None:
    print(f"[{time.monotonic() - _Clock.started:7.1f} s] {message}", file=sys.stderr, flush=True)


def _die_with_parent() -> None:
    """Linux: the server gets SIGTERM if this script dies without cleaning up."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def clean_env(**settings: str) -> dict[str, str]:
    """This process's environment without application settings, plus ``settings``.

    A developer's model keys or service URLs must not leak into a server under test, and
    ``uv run`` 's ``VIRTUAL_ENV`` must not confuse the reference's own environment.
    """
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(_APP_ENV_PREFIXES)
        and name not in _APP_ENV_NAMES
        and name != "VIRTUAL_ENV"
    }
    env.update(settings)
    return env


def _tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.strip().splitlines()[-lines:])


def _wait_ready(process: subprocess.Popen[bytes], url: str, log: Path, name: str) -> None:
    import httpx

    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServiceUnavailable(
                f"{name} exited with code {process.returncode} before it was ready; "
                f"log {log}:\n{_tail(log)}"
            )
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise ServiceUnavailable(
        f"{name} did not answer {url} within {START_TIMEOUT_S:.0f} s; log {log}:\n{_tail(log)}"
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group (its own session), then SIGKILL if it lingers."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=STOP_TIMEOUT_S)
    # A child the server left behind in its group goes too.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


@contextmanager
def serve(
    name: str, args: Sequence[str], env: dict[str, str], cwd: Path, ready_url: str
) -> Iterator[None]:
    """Run a server until the block ends; its output goes to ``cwd/<name>.log``."""
    log = cwd / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            list(args),
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    try:
        _wait_ready(process, ready_url, log, name)
        _say(f"{name} ready (pid {process.pid})")
        yield
    finally:
        _say(f"stopping {name} (pid {process.pid})")
        _stop(process)
        _say(f"{name} stopped")


# --- the targets --------------------------------------------------------------------------


def _user_token(url: str) -> str:
    import httpx

    email = f"bench-{secrets.token_hex(4)}@example.com"
    with httpx.Client(base_url=url, timeout=30) as http:
        registered = http.post("/api/v1/auth/register", json={"email": email, "password": PASSWORD})
        if registered.status_code != 201:
            raise ServiceUnavailable(f"register failed: {registered.status_code} {registered.text}")
        login = http.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
        if login.status_code != 200:
            raise ServiceUnavailable(f"login failed: {login.status_code} {login.text}")
        token: str = login.json()["access_token"]
        return token


@contextmanager
def scribe_serve(workdir: Path, workload: Workload, **services: str) -> Iterator[Endpoint]:
    """``scribe serve`` on a free port, with ``services`` (env names) added to its settings."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = clean_env(
        **workload.server_env(),
        SCRIBE_WORKER_CONCURRENCY=str(workload.workers),
        SCRIBE_CHECKPOINT_POOL_SIZE=str(max(10, workload.workers)),
        # One login serves the whole benchmark.
        SCRIBE_ACCESS_TOKEN_TTL_S="86400",
        SCRIBE_AUTH_RATE_LIMIT="10000",
        **services,
    )
    scribe = Path(sys.executable).with_name("scribe")
    data = workdir / "data"
    command = [str(scribe), "--data-dir", str(data), "serve", "--host", "127.0.0.1"]
    command += ["--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    with serve("scribe-serve", command, env, workdir, f"{url}/health"):
        yield Endpoint(url, {"Authorization": f"Bearer {_user_token(url)}"})


@contextmanager
def postgres_redis(
    workdir: Path, database_url: str | None, redis_url: str | None
) -> Iterator[dict[str, str]]:
    """``DATABASE_URL`` and ``REDIS_URL``: given, or throwaway servers (stopped afterwards)."""
    from tests.services import postgres, redis

    services = workdir / "services"
    services.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        if database_url is None:
            server = postgres.start(services)
            stack.callback(server.stop)
            database_url = postgres.create_database(server.url)
            stack.callback(postgres.drop_database, server.url, postgres.database_name(database_url))
        if redis_url is None:
            running = redis.start(services)
            stack.callback(running.stop)
            redis_url = running.url
        yield {"DATABASE_URL": database_url, "REDIS_URL": redis_url}


def _shared_pins() -> list[str]:
    pins = []
    for name in _SHARED_PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            pins.append(f"{name}=={metadata.version(name)}")
    return pins


def _run_tool(args: Sequence[str], what: str) -> None:
    try:
        result = subprocess.run(
            list(args),
            capture_output=True,
            text=True,
            check=False,
            timeout=INSTALL_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
            env=clean_env(),
        )
    except subprocess.TimeoutExpired as exc:
        raise ServiceUnavailable(f"{what} took longer than {INSTALL_TIMEOUT_S:.0f} s") from exc
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()[-6:]
        raise ServiceUnavailable(f"{what} failed ({result.returncode}): " + " | ".join(detail))


def ensure_langgraph_dev(venv: Path) -> Path:
    """The ``langgraph`` executable of the cached reference environment, made if needed.

    The environment holds ``langgraph-cli[inmem]`` (pinned), the project in editable mode
    and the project's own versions of LangGraph and langchain-core; it is rebuilt when any
    of those, the project's ``pyproject.toml`` or the checkout's path change.
    """
    uv = shutil.which("uv")
    if uv is None:
        raise ServiceUnavailable("`uv` is not on PATH: cannot build the langgraph-dev environment")
    pins = _shared_pins()
    stamp = json.dumps(
        {
            "root": str(ROOT),
            "pyproject": hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest(),
            "requirements": LANGGRAPH_DEV_REQUIREMENTS,
            "pins": pins,
            "python": sys.version,
        },
        sort_keys=True,
    )
    langgraph = venv / "bin" / "langgraph"
    stamp_file = venv / "infinitescribe-stamp.json"
    try:
        venv.parent.mkdir(parents=True, exist_ok=True)
        # Two benchmarks starting at once must not build the same environment together.
        with (venv.parent / f".{venv.name}.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if langgraph.exists() and stamp_file.exists() and stamp_file.read_text() == stamp:
                return langgraph
            _install_langgraph_dev(uv, venv, pins)
            if not langgraph.exists():
                raise ServiceUnavailable(f"the install left no {langgraph}")
            stamp_file.write_text(stamp)
    except OSError as exc:
        raise ServiceUnavailable(f"cannot build the langgraph-dev environment: {exc}") from exc
    return langgraph


def _install_langgraph_dev(uv: str, venv: Path, pins: Sequence[str]) -> None:
    _say(f"building the langgraph-dev environment in {venv} (once; needs PyPI)...")
    base_python = os.path.realpath(sys.executable)
    _run_tool([uv, "venv", "--allow-existing", "--python", base_python, str(venv)], "uv venv")
    constraints = venv / "constraints.txt"
    constraints.write_text("".join(f"{pin}\n" for pin in pins))
    _run_tool(
        [
            uv,
            "pip",
            "install",
            "--python",
            str(venv / "bin" / "python"),
            "--constraint",
            str(constraints),
            "--editable",
            str(ROOT),
            *LANGGRAPH_DEV_REQUIREMENTS,
        ],
        "uv pip install langgraph-cli[inmem]",
    )


def _venv_versions(venv: Path) -> str:
    script = (
        "import importlib.metadata as m;"
        "print(', '.join(f'{p} {m.version(p)}' for p in "
        "('langgraph-api', 'langgraph-runtime-inmem', 'langgraph')))"
    )
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-c", script],
        capture_output=True,
        text=True,
        check=False,
        env=clean_env(),
    )
    return result.stdout.strip() or "versions unknown"


@contextmanager
def langgraph_dev(workdir: Path, workload: Workload, venv: Path) -> Iterator[Endpoint]:
    """``langgraph dev`` serving the ``novel`` graph from a generated ``langgraph.json``."""
    langgraph = ensure_langgraph_dev(venv)
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "langgraph.json"
    config.write_text(
        json.dumps(
            {"dependencies": ["."], "graphs": {"novel": f"{LANGGRAPH_DEV_GRAPH}:make_graph"}}
        )
    )
    port = free_port()
    env = clean_env(
        **workload.server_env(),
        SCRIBE_DATA_DIR=str(workdir / "data"),
        # Offline: no tracing, no analytics, no LangSmith.
        LANGSMITH_TRACING="false",
        LANGCHAIN_TRACING_V2="false",
        LANGGRAPH_CLI_NO_ANALYTICS="1",
        DO_NOT_TRACK="1",
    )
    command = [
        str(langgraph),
        "dev",
        "--no-browser",
        "--no-reload",
        "--allow-blocking",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n-jobs-per-worker",
        str(workload.workers),
        "--config",
        str(config),
    ]
    url = f"http://127.0.0.1:{port}"
    with serve("langgraph-dev", command, env, workdir, f"{url}/ok"):
        yield Endpoint(url)


def bench_target(
    target: str,
    clients: Sequence[int],
    workload: Workload,
    workdir: Path,
    *,
    database_url: str | None = None,
    redis_url: str | None = None,
    langgraph_venv: Path = DEFAULT_LANGGRAPH_VENV,
) -> TargetReport:
    """Start ``target``, measure every batch, stop everything it started."""
    where = workdir / target
    notes: tuple[str, ...] = ()
    try:
        with ExitStack() as stack:
            if target == "embedded":
                endpoint = stack.enter_context(scribe_serve(where, workload))
            elif target == "postgres-redis":
                services = stack.enter_context(postgres_redis(where, database_url, redis_url))
                endpoint = stack.enter_context(
                    scribe_serve(
                        where, workload, SCRIBE_JWT_SECRET=secrets.token_urlsafe(48), **services
                    )
                )
            elif target == "langgraph-dev":
                endpoint = stack.enter_context(langgraph_dev(where, workload, langgraph_venv))
                notes = (f"langgraph-dev: {_venv_versions(langgraph_venv)}",)
            else:
                raise ServiceUnavailable(f"unknown target {target!r}; use one of {TARGETS}")
            report = measure(endpoint, target, clients, workload)
    except ServiceUnavailable as exc:
        return TargetReport(target, unavailable=str(exc))
    return TargetReport(report.target, report.batches, report.unavailable, notes)


# --- output -------------------------------------------------------------------------------

_COLUMNS = (
    ("target", 14),
    ("clients", 7),
    ("runs", 5),
    ("runs/s", 7),
    ("ttfe p50", 8),
    ("ttfe p99", 8),
    ("ttfe* p50", 9),
    ("ttfe* p99", 9),
    ("run p50", 7),
    ("errors", 6),
    ("load", 5),
)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}"


def format_table(reports: Sequence[TargetReport]) -> str:
    """The figures as a fixed-width table, then unavailable targets and errors."""
    header = "  ".join(
        name.rjust(width) if i else name.ljust(width) for i, (name, width) in enumerate(_COLUMNS)
    )
    lines = [header, "-" * len(header)]
    footer: list[str] = []
    for report in reports:
        if report.unavailable is not None:
            footer.append(f"{report.target}: UNAVAILABLE: {report.unavailable}")
            continue
        for batch in report.batches:
            run_p50 = batch.run_time(50)
            cells = (
                batch.target,
                str(batch.clients),
                str(batch.runs),
                f"{batch.runs_per_s:.2f}",
                _ms(batch.ttfe(50, metadata_included=True)),
                _ms(batch.ttfe(99, metadata_included=True)),
                _ms(batch.ttfe(50, metadata_included=False)),
                _ms(batch.ttfe(99, metadata_included=False)),
                "-" if run_p50 is None else f"{run_p50:.2f}",
                str(batch.errors),
                f"{batch.load:.1f}",
            )
            lines.append(
                "  ".join(
                    cell.rjust(width) if i else cell.ljust(width)
                    for i, (cell, (_, width)) in enumerate(zip(cells, _COLUMNS, strict=True))
                )
            )
            if batch.first_error:
                footer.append(
                    f"{batch.target} x{batch.clients}: {batch.errors} error(s), "
                    f"e.g. {batch.first_error}"
                )
        footer.extend(report.notes)
    lines.append("")
    lines.append(
        "ttfe: request -> first SSE event, which is LangGraph's metadata event on both servers "
        "(scribe serve sends it once the run is accepted, langgraph dev once a worker starts "
        "the run, so there it includes the queue wait); ttfe*: request -> first event after "
        "metadata (the graph's first output, queue wait included on both); both in ms.\n"
        "run: request -> end of stream, s. Percentiles nearest-rank. load: 1-minute load "
        "average at the end of the batch."
    )
    return "\n".join(lines + footer)


def _parse_counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected numbers like 1,10,100, got {text!r}") from exc
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("client counts must be at least 1")
    return counts


def _parse_targets(text: str) -> tuple[str, ...]:
    targets = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or not targets:
        raise argparse.ArgumentTypeError(f"targets are {', '.join(TARGETS)}; got {text!r}")
    return targets


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's options."""
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 1 and 10 clients, 1 run each"
    )
    parser.add_argument(
        "--clients", type=_parse_counts, help="concurrent clients (default 1,10,100)"
    )
    parser.add_argument("--targets", type=_parse_targets, default=TARGETS, help="comma-separated")
    parser.add_argument(
        "--runs-per-client", type=int, help="runs each client makes in turn (default 2)"
    )
    parser.add_argument("--chapters", type=int, default=1)
    parser.add_argument("--words", type=int, default=150, help="words per chapter (min 100)")
    parser.add_argument("--tokens-per-second", type=float, default=500.0, help="offline model rate")
    parser.add_argument("--workers", type=int, default=10, help="runs each server executes at once")
    parser.add_argument("--stream-mode", default=",".join(DEFAULT_STREAM_MODE))
    parser.add_argument(
        "--no-warm-up", action="store_true", help="skip the untimed first run per target"
    )
    parser.add_argument("--database-url", help="Postgres for postgres-redis (default: throwaway)")
    parser.add_argument("--redis-url", help="Redis for postgres-redis (default: throwaway)")
    parser.add_argument("--langgraph-venv", type=Path, default=DEFAULT_LANGGRAPH_VENV)
    parser.add_argument(
        "--workdir", type=Path, help="keep data and server logs here (default: a temp dir)"
    )
    return parser


def _terminate(signum: int, _frame: FrameType | None) -> None:
    # SIGTERM unwinds like Ctrl-C, so every server started here is stopped.
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    clients = args.clients or (QUICK_CLIENTS if args.quick else DEFAULT_CLIENTS)
    runs_per_client = args.runs_per_client or (1 if args.quick else 2)
    workload = Workload(
        chapters=args.chapters,
        words_per_chapter=args.words,
        tokens_per_second=args.tokens_per_second,
        runs_per_client=runs_per_client,
        workers=args.workers,
        stream_mode=tuple(m.strip() for m in args.stream_mode.split(",") if m.strip()),
        warm_up=not args.no_warm_up,
    )
    print(
        f"workload: {workload.chapters} chapter(s) of ~{workload.words_per_chapter} words per run, "
        f"offline model at {workload.tokens_per_second:g} tokens/s, stream_mode="
        f"{list(workload.stream_mode)}, {workload.runs_per_client} run(s) per client, "
        f"{workload.workers} runs at once per server, {os.cpu_count()} CPU(s) shared by "
        f"servers and clients, load average {os.getloadavg()[0]:.2f} at the start",
        flush=True,
    )
    with contextlib.ExitStack() as stack:
        if args.workdir is not None:
            workdir = args.workdir.resolve()
            workdir.mkdir(parents=True, exist_ok=True)
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="scribe-bench-")))
        reports = []
        for target in args.targets:
            _say(f"{target}: starting")
            reports.append(
                bench_target(
                    target,
                    clients,
                    workload,
                    workdir,
                    database_url=args.database_url,
                    redis_url=args.redis_url,
                    langgraph_venv=args.langgraph_venv,
                )
            )
            if reports[-1].unavailable:
                _say(f"{target}: unavailable: {reports[-1].unavailable}")
    print(format_table(reports), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
