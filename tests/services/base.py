"""What every test service module provides.

Each module (``postgres``, ``redis``, ``neo4j``) exposes ``start(workdir: Path) -> Running``:
it returns a service from the environment when its URL variable is set, otherwise it
installs what is missing (apt, Maven; idempotent and cached) and starts a throwaway
server on a free loopback port under ``workdir``. It raises :class:`ServiceUnavailable`
with a precise reason when neither is possible. The session fixtures in
``tests/conftest.py`` turn that into a skip, or into a failure when
``SCRIBE_TEST_REQUIRE_SERVICES=1`` (as ``.ci/run`` sets it).
"""

from __future__ import annotations

import contextlib
import fcntl
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ServiceUnavailable(RuntimeError):
    """The service could neither be found nor started here; the message says why."""


@dataclass
class Running:
    """A service the tests can use."""

    name: str
    url: str
    started_here: bool
    startup_seconds: float
    extra: dict[str, Any] = field(default_factory=dict)
    stop: Callable[[], None] = lambda: None


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Serialise builds and downloads of a service across test processes (e.g.
    pytest-xdist workers): an exclusive ``flock`` on ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
