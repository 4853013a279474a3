"""A real Redis server for the tests: from ``SCRIBE_TEST_REDIS_URL`` or started here.

Started here means ``redis-server`` (Debian's package, installed with apt when missing) as
a child process on a free loopback port, without persistence, its working directory under
the session's workdir; ``stop()`` terminates it. Tests get isolation through
:func:`flush_database` (a clean database before and after each test) or a unique key
prefix (:func:`new_key_prefix`, :func:`delete_keys`).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import redis

from tests.services.apt import ensure_packages
from tests.services.base import Running, ServiceUnavailable, free_port

URL_ENV = "SCRIBE_TEST_REDIS_URL"
_START_ATTEMPTS = 3
_READY_TIMEOUT_S = 15.0
_PR_SET_PDEATHSIG = 1


def start(workdir: Path) -> Running:
    """The server of ``SCRIBE_TEST_REDIS_URL``, or a fresh ``redis-server`` under ``workdir``."""
    started = time.monotonic()
    url = os.environ.get(URL_ENV)
    if url:
        _ping(url)
        return Running(
            name="redis",
            url=url,
            started_here=False,
            startup_seconds=time.monotonic() - started,
            extra={"source": URL_ENV},
        )
    binary, install_seconds = _find_or_install()
    root = workdir / "redis"
    root.mkdir(parents=True, exist_ok=True)
    last_error = ""
    for _ in range(_START_ATTEMPTS):
        # The port is free now, but another process may bind it before redis does.
        port = free_port()
        process = _spawn(binary, port, root)
        url = f"redis://127.0.0.1:{port}/0"
        error = _wait_ready(process, url, root / "redis.log")
        if error is None:
            return Running(
                name="redis",
                url=url,
                started_here=True,
                startup_seconds=time.monotonic() - started,
                extra={"install_seconds": install_seconds, "port": port, "pid": process.pid},
                stop=functools.partial(_terminate, process),
            )
        _terminate(process)
        last_error = error
    raise ServiceUnavailable(f"redis-server did not start in {_START_ATTEMPTS} tries: {last_error}")


class PersistentServer:
    """A ``redis-server`` of its own with an append-only file, as deployments run it
    (``docker-compose.yml``), that fault-injection tests restart on the same port."""

    def __init__(self, workdir: Path) -> None:
        self._binary, _ = _find_or_install()
        self._root = workdir / "redis-aof"
        self._root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        process = _spawn(self._binary, self.port, self._root, persistent=True)
        error = _wait_ready(process, self.url, self._root / "redis.log")
        if error is not None:
            _terminate(process)
            raise ServiceUnavailable(f"persistent redis-server did not start: {error}")
        return process

    def restart(self, down_s: float = 0.0) -> None:
        """SIGTERM (Redis writes its append-only file and exits), wait, start again."""
        _terminate(self._process)
        time.sleep(down_s)
        self._process = self._spawn()

    def stop(self) -> None:
        """Stop the server; its files stay under the test's workdir."""
        _terminate(self._process)


def database_url(server_url: str, db: int) -> str:
    """``server_url`` pointing at logical database ``db``."""
    parts = urlsplit(server_url)
    return urlunsplit(parts._replace(path=f"/{db}"))


def flush_database(url: str) -> None:
    """Delete every key of the database ``url`` points at (``/0`` when it names none)."""
    client = redis.Redis.from_url(url, socket_timeout=10)
    try:
        client.flushdb()
    finally:
        client.close()


def new_key_prefix() -> str:
    """A key prefix no other test uses, e.g. ``test:3f2a...:``."""
    return f"test:{uuid.uuid4().hex}:"


def delete_keys(url: str, prefix: str) -> int:
    """Delete the keys starting with ``prefix``; return how many were deleted."""
    if not prefix:
        raise ValueError("an empty prefix would delete every key")
    client = redis.Redis.from_url(url, socket_timeout=10)
    try:
        deleted = 0
        batch: list[bytes] = []
        for key in client.scan_iter(match=_glob_escape(prefix) + "*", count=500):
            batch.append(key)
            if len(batch) >= 500:
                deleted += int(client.delete(*batch))
                batch.clear()
        if batch:
            deleted += int(client.delete(*batch))
        return deleted
    finally:
        client.close()


def _glob_escape(text: str) -> str:
    return "".join(f"\\{char}" if char in "*?[]\\" else char for char in text)


# --- the server -----------------------------------------------------------------------


def _find_or_install() -> tuple[str, float]:
    binary = _find_binary()
    if binary is not None:
        return binary, 0.0
    install_seconds = ensure_packages("redis-server")
    binary = _find_binary()
    if binary is None:
        raise ServiceUnavailable("package redis-server is installed but redis-server is not found")
    return binary, install_seconds


def _find_binary() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    debian = Path("/usr/bin/redis-server")
    return str(debian) if debian.exists() else None


def _spawn(
    binary: str, port: int, root: Path, *, persistent: bool = False
) -> subprocess.Popen[bytes]:
    args = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "yes" if persistent else "no",
        "--daemonize",
        "no",
        "--dir",
        str(root),
        "--logfile",
        str(root / "redis.log"),
    ]
    return subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_die_with_parent,
    )


def _die_with_parent() -> None:
    """Linux: the server gets SIGTERM if pytest dies without running its finalizers."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _wait_ready(process: subprocess.Popen[bytes], url: str, log: Path) -> str | None:
    """``None`` once the server answers PING, else why it did not."""
    deadline = time.monotonic() + _READY_TIMEOUT_S
    last = "no answer"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return f"exited with {process.returncode}: {_tail(log)}"
        try:
            _ping(url)
        except ServiceUnavailable as exc:
            last = str(exc)
            time.sleep(0.02)
        else:
            return None
    return f"no PING answer within {_READY_TIMEOUT_S:.0f} s ({last}): {_tail(log)}"


def _terminate(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def _ping(url: str) -> None:
    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        if not client.ping():
            raise ServiceUnavailable(f"Redis at {_redacted(url)} did not answer PING")
    except redis.RedisError as exc:
        raise ServiceUnavailable(
            f"cannot reach Redis at {_redacted(url)}: {_one_line(exc)}"
        ) from exc
    finally:
        client.close()


def _tail(log: Path, lines: int = 3) -> str:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return "no log"
    return " | ".join(text.strip().splitlines()[-lines:])


def _redacted(url: str) -> str:
    """``url`` without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def _one_line(error: BaseException) -> str:
    """A driver's multi-line message on one line, for skip reasons and the summary."""
    return " ".join(str(error).split())
