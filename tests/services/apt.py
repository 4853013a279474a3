"""Install Debian packages for the test services, once, even from parallel test sessions.

The suite may run on a fresh machine (CI) where a server binary is missing; the services
then install it with :func:`ensure_packages`. Parallel pytest sessions (or an engineer's
shell) may install at the same moment, so the whole check-and-install runs under an
``fcntl`` lock, and apt itself is told to wait for its own lock instead of failing.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.services.base import ServiceUnavailable

# apt on a cold machine downloads and configures packages; a JVM or a database takes a while.
INSTALL_TIMEOUT_S = 900.0
UPDATE_TIMEOUT_S = 600.0
_APT_LISTS = Path("/var/lib/apt/lists")


def is_installed(name: str) -> bool:
    """True when dpkg reports package ``name`` as fully installed."""
    if shutil.which("dpkg-query") is None:
        return False
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", name],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.returncode == 0 and result.stdout.strip() == "install ok installed"


def ensure_packages(*names: str) -> float:
    """Install the missing ones of ``names`` with apt; return the seconds spent installing.

    Returns ``0.0`` when everything was already installed. Runs ``apt-get update`` only when
    a package has no install candidate or the first install attempt fails (stale lists).
    Raises :class:`ServiceUnavailable` with apt's last error line when it cannot install.
    """
    if not names:
        return 0.0
    if not [name for name in names if not is_installed(name)]:
        return 0.0
    if shutil.which("apt-get") is None:
        raise ServiceUnavailable(
            f"{', '.join(names)} not installed and apt-get is not available to install it"
        )
    if os.geteuid() != 0:
        raise ServiceUnavailable(
            f"{', '.join(names)} not installed and installing needs root "
            f"(run: sudo apt-get install -y {' '.join(names)})"
        )
    started = time.monotonic()
    lock_path = Path(tempfile.gettempdir()) / "scribe-test-apt.lock"
    with lock_path.open("a") as lock:
        # Another session may hold the lock while it installs the very same package.
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            missing = [name for name in names if not is_installed(name)]
            if missing:
                _install(missing)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return time.monotonic() - started


def _install(names: list[str]) -> None:
    if _needs_update(names):
        _apt(["update"], UPDATE_TIMEOUT_S)
    try:
        _apt(["install", "-y", "--no-install-recommends", *names], INSTALL_TIMEOUT_S)
    except ServiceUnavailable:
        # Package lists older than the mirror give 404s; one refresh and retry fixes that.
        _apt(["update"], UPDATE_TIMEOUT_S)
        _apt(["install", "-y", "--no-install-recommends", *names], INSTALL_TIMEOUT_S)
    still_missing = [name for name in names if not is_installed(name)]
    if still_missing:
        raise ServiceUnavailable(f"apt-get install finished but {still_missing} not installed")


def _needs_update(names: list[str]) -> bool:
    """No package lists yet, or one of ``names`` has no install candidate in them."""
    if not _APT_LISTS.is_dir() or not any(_APT_LISTS.glob("*_Packages*")):
        return True
    result = subprocess.run(
        ["apt-cache", "policy", *names], capture_output=True, text=True, check=False
    )
    candidates = [line for line in result.stdout.splitlines() if "Candidate:" in line]
    return len(candidates) < len(names) or any("(none)" in line for line in candidates)


def _apt(args: list[str], timeout: float) -> None:
    command = [
        "apt-get",
        "-q",
        # Wait for a concurrent apt (outside this lock) rather than fail at once.
        "-o",
        "DPkg::Lock::Timeout=300",
        *args,
    ]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise ServiceUnavailable(
            f"`apt-get {' '.join(args)}` timed out after {timeout:.0f} s"
        ) from exc
    if result.returncode != 0:
        raise ServiceUnavailable(
            f"`apt-get {' '.join(args)}` failed (exit {result.returncode}): "
            f"{_last_error_line(result.stderr or result.stdout)}"
        )


def _last_error_line(output: str) -> str:
    """apt's most telling line: the last ``E:`` line, else the last non-empty one."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("E:")]
    if errors:
        return errors[-1]
    return lines[-1] if lines else "no output"
