"""A Neo4j for the tests: ``SCRIBE_TEST_NEO4J_URL`` if set, else a throwaway local server.

There is no Docker here, so the local server is Neo4j's own test harness, resolved by Maven
from ``neo4j_launcher/pom.xml`` and started by the tiny ``ScribeNeo4j`` launcher next to
it (Bolt only, loopback only, auth disabled, small heap). The classpath Maven resolves and
the compiled launcher are cached under ``~/.cache/infinitescribe/neo4j-<version>-<hash>/``
(``$XDG_CACHE_HOME`` is honoured), keyed by the pom and the launcher source, so only the
first start pays for Maven; later ones just start the JVM.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from tests.services.base import Running, ServiceUnavailable, file_lock, free_port

LAUNCHER_DIR = Path(__file__).parent / "neo4j_launcher"
POM = LAUNCHER_DIR / "pom.xml"
SOURCE = LAUNCHER_DIR / "ScribeNeo4j.java"
MAIN_CLASS = "ScribeNeo4j"
READY = "SCRIBE_NEO4J_READY"
START_TIMEOUT_S = 120.0
TEST_JAVA_OPTIONS = ("-Xms128m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")
"""For test runs: a small heap, the collector with the fewest threads, and only the quick
JIT tier, which ran the conformance suite about a fifth faster than full optimisation (a
test session is over before the optimising compiler pays off)."""
STEADY_JAVA_OPTIONS = ("-Xms128m", "-Xmx512m")
"""For measurements (benchmarks): the JVM's defaults, full JIT, same small heap."""

_ENV_URL = "SCRIBE_TEST_NEO4J_URL"
_ENV_USER = "SCRIBE_TEST_NEO4J_USER"
_ENV_PASSWORD = "SCRIBE_TEST_NEO4J_PASSWORD"


def neo4j_version() -> str:
    """The Neo4j version the pom asks Maven for."""
    found = re.search(r"<neo4j\.version>([^<]+)</neo4j\.version>", POM.read_text())
    if found is None:
        raise ServiceUnavailable(f"{POM} declares no <neo4j.version>")
    return found.group(1).strip()


def cache_dir() -> Path:
    """Where the resolved classpath and compiled launcher of this pom and source live."""
    digest = hashlib.sha256(POM.read_bytes() + b"\0" + SOURCE.read_bytes()).hexdigest()[:12]
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "infinitescribe" / f"neo4j-{neo4j_version()}-{digest}"


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise ServiceUnavailable(f"{name} is not on PATH; Neo4j needs Java 17+ and Maven")
    return found


def _run(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=900)
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip()
        raise ServiceUnavailable(f"{what} failed (exit {done.returncode}): {output}")


def build_launcher() -> tuple[Path, bool]:
    """The cache folder holding ``classpath.txt`` and ``classes/``; ``True`` if built now.

    Idempotent: a complete cache entry is reused as is. The entry is built in a temporary
    folder and renamed into place, so an interrupted build never leaves a half entry.
    """
    target = cache_dir()
    if (target / "classpath.txt").is_file():
        return target, False
    with file_lock(target.parent / f"{target.name}.lock"):
        if (target / "classpath.txt").is_file():
            return target, False
        mvn, javac = _tool("mvn"), _tool("javac")
        staging = Path(tempfile.mkdtemp(prefix=f"{target.name}.", dir=target.parent))
        try:
            classpath_file = staging / "classpath.txt"
            _run(
                [
                    mvn,
                    "-q",
                    "-B",
                    "-f",
                    str(POM),
                    "dependency:build-classpath",
                    f"-Dmdep.outputFile={staging / 'maven-classpath.txt'}",
                ],
                f"Maven could not resolve Neo4j {neo4j_version()}",
            )
            classpath = (staging / "maven-classpath.txt").read_text().strip()
            _run(
                [javac, "-d", str(staging / "classes"), "-cp", classpath, str(SOURCE)],
                "javac ScribeNeo4j.java",
            )
            classpath_file.write_text(classpath)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target, True


class _PortTaken(ServiceUnavailable):
    """The launcher's Bolt port was taken before it could bind it."""


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no output)"
    return "\n".join(text.strip().splitlines()[-lines:]) or "(no output)"


def _stop(process: subprocess.Popen[bytes], data_dir: Path) -> None:
    """Close the launcher's stdin (its signal to shut down), escalate if it lingers."""
    if process.poll() is None:
        with contextlib.suppress(OSError):
            if process.stdin is not None:
                process.stdin.close()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    shutil.rmtree(data_dir, ignore_errors=True)


def _launch(
    home: Path, workdir: Path, java_options: Sequence[str]
) -> tuple[subprocess.Popen[bytes], Path, str]:
    """Start the launcher and wait for its ready line; returns the process, data dir, URL."""
    java = _tool("java")
    classpath = f"{home / 'classes'}{os.pathsep}{(home / 'classpath.txt').read_text().strip()}"
    data_dir = Path(tempfile.mkdtemp(prefix="neo4j-", dir=workdir))
    out_path, err_path = data_dir / "launcher.out", data_dir / "launcher.err"
    port = free_port()
    with out_path.open("wb") as out, err_path.open("wb") as err:
        process = subprocess.Popen(
            [java, *java_options, "-cp", classpath, MAIN_CLASS, str(data_dir / "db"), str(port)],
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=err,
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    problem = ""
    while True:
        for line in out_path.read_text(errors="replace").splitlines():
            if line.startswith(READY):
                return process, data_dir, line.split()[1]
        if process.poll() is not None:
            problem = f"the Neo4j launcher exited with code {process.returncode}"
            break
        if time.monotonic() > deadline:
            problem = f"Neo4j did not accept Bolt connections within {START_TIMEOUT_S:.0f} s"
            break
        time.sleep(0.1)
    tail = _tail(err_path)
    port_taken = "Address already in use" in err_path.read_text(errors="replace")
    _stop(process, data_dir)
    raise (_PortTaken if port_taken else ServiceUnavailable)(f"{problem}; launcher stderr:\n{tail}")


def _check_reachable(url: str) -> None:
    """Fail fast, with the reason, when nothing listens where ``url`` points."""
    parts = urlsplit(url)
    host, port = parts.hostname or "localhost", parts.port or 7687
    try:
        with socket.create_connection((host, port), timeout=5):
            pass
    except OSError as exc:
        raise ServiceUnavailable(f"{_ENV_URL}={url} is not reachable: {exc}") from exc


def start(workdir: Path, *, java_options: Sequence[str] = TEST_JAVA_OPTIONS) -> Running:
    """Neo4j from ``SCRIBE_TEST_NEO4J_URL``, or a throwaway one started under ``workdir``.

    ``extra`` holds ``user``, ``password`` (``None`` when auth is off) and, for a local
    server, ``version``, ``cold`` (whether this start built the launcher),
    ``build_seconds`` and ``launch_seconds``.
    """
    began = time.monotonic()
    given = os.environ.get(_ENV_URL)
    if given:
        _check_reachable(given)
        return Running(
            name="neo4j",
            url=given,
            started_here=False,
            startup_seconds=time.monotonic() - began,
            extra={
                "user": os.environ.get(_ENV_USER, "neo4j"),
                "password": os.environ.get(_ENV_PASSWORD),
                "source": _ENV_URL,
            },
        )
    workdir.mkdir(parents=True, exist_ok=True)
    home, cold = build_launcher()
    built = time.monotonic()
    for attempt in range(3):
        try:
            process, data_dir, url = _launch(home, workdir, java_options)
            break
        except _PortTaken:
            # Another process took the free port between free_port() and the bind.
            if attempt == 2:
                raise
    ready = time.monotonic()
    return Running(
        name="neo4j",
        url=url,
        started_here=True,
        startup_seconds=ready - began,
        extra={
            "user": "neo4j",
            "password": None,
            "version": neo4j_version(),
            "cold": cold,
            "build_seconds": built - began,
            "launch_seconds": ready - built,
            "pid": process.pid,
            "source": f"neo4j-harness {neo4j_version()}, "
            + ("launcher built now" if cold else "cached launcher"),
        },
        stop=lambda: _stop(process, data_dir),
    )
