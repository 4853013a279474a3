"""A real PostgreSQL server for the tests: from ``SCRIBE_TEST_POSTGRES_URL`` or started here.

Started here means a throwaway cluster: ``initdb`` with trust authentication, ``fsync=off``,
listening on 127.0.0.1 only, on a free port, its socket in its own directory, stopped with
``pg_ctl stop -m fast`` and deleted afterwards. Debian's packaged server is used (installed
with apt when missing); the package's own default cluster is never touched.

As root the cluster is run by the ``postgres`` user (the server refuses to run as root).
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import stat
import subprocess
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from tests.services.apt import ensure_packages
from tests.services.base import Running, ServiceUnavailable, free_port

URL_ENV = "SCRIBE_TEST_POSTGRES_URL"
SUPERUSER = "postgres"
_DEBIAN_ROOT = Path("/usr/lib/postgresql")
# Clusters placed in the system temp dir (when the workdir is not reachable by the server
# user) carry this prefix and the owning pid, so a later session can reap orphans.
_DEDICATED_PREFIX = "scribe-pg-"
_OWNER_FILE = "owner.pid"
_START_ATTEMPTS = 3


@dataclass(frozen=True)
class _Binaries:
    """Where ``initdb`` and ``pg_ctl`` live."""

    bin_dir: Path

    @property
    def initdb(self) -> str:
        return str(self.bin_dir / "initdb")

    @property
    def pg_ctl(self) -> str:
        return str(self.bin_dir / "pg_ctl")


def start(workdir: Path) -> Running:
    """The server of ``SCRIBE_TEST_POSTGRES_URL``, or a fresh cluster started under ``workdir``."""
    started = time.monotonic()
    url = os.environ.get(URL_ENV)
    if url:
        _check_reachable(url)
        return Running(
            name="postgres",
            url=url,
            started_here=False,
            startup_seconds=time.monotonic() - started,
            extra={"source": URL_ENV},
        )
    binaries, install_seconds = _find_or_install()
    _reap_orphans()
    root = _cluster_root(workdir)
    try:
        port = _init_and_start(binaries, root)
    except BaseException:
        _remove(root)
        raise
    url = f"postgresql://{SUPERUSER}@127.0.0.1:{port}/postgres"
    _check_reachable(url)
    return Running(
        name="postgres",
        url=url,
        started_here=True,
        startup_seconds=time.monotonic() - started,
        extra={"install_seconds": install_seconds, "cluster": str(root), "port": port},
        stop=lambda: _stop(binaries, root),
    )


class Outages:
    """Outages of a cluster started here, for fault-injection tests: stop it, kill its
    postmaster, start it again on the same port with its data."""

    def __init__(self, running: Running) -> None:
        if not running.started_here:
            raise ServiceUnavailable(
                f"outages need a cluster started by the tests, not {URL_ENV}'s server"
            )
        binaries = _find_binaries()
        if binaries is None:
            raise ServiceUnavailable("PostgreSQL's binaries are gone")
        self._binaries = binaries
        self._root = Path(str(running.extra["cluster"]))

    @property
    def _data(self) -> Path:
        return self._root / "data"

    def stop(self) -> None:
        """Stop the server at once (``-m immediate``: no clean shutdown, like a crash)."""
        _run(
            _as_server_user(
                [self._binaries.pg_ctl, "stop", "-m", "immediate", "-w", "-D", str(self._data)]
            ),
            "pg_ctl stop",
        )

    def kill(self) -> None:
        """SIGKILL the postmaster (its backends notice and exit on their own)."""
        pid = int((self._data / "postmaster.pid").read_text().splitlines()[0])
        os.kill(pid, 9)
        deadline = time.monotonic() + 30
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)

    def start(self) -> None:
        """Start it again (same port, same data); retried while killed backends linger."""
        log = self._root / "server.log"
        last = ""
        for _ in range(20):
            result = subprocess.run(
                _as_server_user(
                    [
                        self._binaries.pg_ctl,
                        "start",
                        "-w",
                        "-t",
                        "60",
                        "-D",
                        str(self._data),
                        "-l",
                        str(log),
                    ]
                ),
                capture_output=True,
                text=True,
                check=False,
                stdin=subprocess.DEVNULL,
            )
            if result.returncode == 0:
                return
            last = _tail(log) or result.stderr.strip()
            time.sleep(0.5)
        raise ServiceUnavailable(f"pg_ctl start failed after an outage: {last}")


def create_database(server_url: str) -> str:
    """Create an empty database ``test_<uuid hex>`` and return its URL (same server, user)."""
    name = f"test_{uuid.uuid4().hex}"
    with psycopg.connect(server_url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return database_url(server_url, name)


def drop_database(server_url: str, name: str) -> None:
    """Drop database ``name`` if it exists, ending its remaining connections."""
    with psycopg.connect(server_url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def database_url(server_url: str, name: str) -> str:
    """``server_url`` pointing at database ``name`` instead (query options kept)."""
    parts = urlsplit(server_url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def database_name(url: str) -> str:
    """The database a ``postgresql://`` URL points at."""
    return urlsplit(url).path.lstrip("/")


# --- finding the binaries -------------------------------------------------------------


def _find_or_install() -> tuple[_Binaries, float]:
    found = _find_binaries()
    if found is not None:
        return found, 0.0
    install_seconds = ensure_packages("postgresql")
    found = _find_binaries()
    if found is None:
        raise ServiceUnavailable(
            f"package postgresql is installed but no initdb/pg_ctl under {_DEBIAN_ROOT}/*/bin"
        )
    return found, install_seconds


def _find_binaries() -> _Binaries | None:
    """Debian's newest versioned bin dir, else ``initdb`` and ``pg_ctl`` on ``PATH``."""
    versions: list[tuple[int, Path]] = []
    if _DEBIAN_ROOT.is_dir():
        for child in _DEBIAN_ROOT.iterdir():
            bin_dir = child / "bin"
            tools = (bin_dir / "pg_ctl", bin_dir / "initdb")
            if re.fullmatch(r"\d+", child.name) and all(tool.is_file() for tool in tools):
                versions.append((int(child.name), bin_dir))
    if versions:
        return _Binaries(max(versions)[1])
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl and Path(initdb).parent == Path(pg_ctl).parent:
        return _Binaries(Path(initdb).parent)
    return None


# --- the cluster ----------------------------------------------------------------------


def _server_user() -> pwd.struct_passwd | None:
    """The account the server runs as: ``postgres`` when we are root, else ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SUPERUSER)
    except KeyError as exc:
        raise ServiceUnavailable(
            "running as root but there is no `postgres` user to run the server "
            "(it comes with the postgresql package)"
        ) from exc


def _as_server_user(args: Sequence[str]) -> list[str]:
    if _server_user() is None:
        return list(args)
    return ["runuser", "-u", SUPERUSER, "--", *args]


def _cluster_root(workdir: Path) -> Path:
    """An empty directory the server user owns, under ``workdir`` if it can reach it."""
    user = _server_user()
    if user is None or _traversable_by(workdir, user):
        root = workdir / "postgres"
        root.mkdir(parents=True)
    else:
        # pytest's temp dirs are private to root; a dedicated dir in /tmp avoids opening them.
        root = Path(tempfile.mkdtemp(prefix=_DEDICATED_PREFIX))
        root.chmod(0o700)
        (root / _OWNER_FILE).write_text(_process_identity(os.getpid()))
    if user is not None:
        for path in (root, *root.iterdir()):
            os.chown(path, user.pw_uid, user.pw_gid)
    return root


def _traversable_by(path: Path, user: pwd.struct_passwd) -> bool:
    """Whether ``user`` may enter every directory from ``/`` down to ``path``."""
    groups = {user.pw_gid}
    for directory in (path, *path.parents):
        info = directory.stat()
        if info.st_uid == user.pw_uid:
            allowed = bool(info.st_mode & stat.S_IXUSR)
        elif info.st_gid in groups:
            allowed = bool(info.st_mode & stat.S_IXGRP)
        else:
            allowed = bool(info.st_mode & stat.S_IXOTH)
        if not allowed:
            return False
    return True


def _init_and_start(binaries: _Binaries, root: Path) -> int:
    """``initdb`` a cluster in ``root/data`` and start it; return its port."""
    data, sockets = root / "data", root / "run"
    _run(
        _as_server_user(
            [
                binaries.initdb,
                "--pgdata",
                str(data),
                "--username",
                SUPERUSER,
                "--auth-local=trust",
                "--auth-host=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ]
        ),
        "initdb",
    )
    _run(_as_server_user(["mkdir", "-m", "700", str(sockets)]), "mkdir")
    last_error = ""
    for _ in range(_START_ATTEMPTS):
        # The port is free now but another process may take it before the server binds.
        port = free_port()
        _write_conf(data, port, sockets)
        log = root / "server.log"
        result = subprocess.run(
            _as_server_user(
                [binaries.pg_ctl, "start", "-w", "-t", "60", "-D", str(data), "-l", str(log)]
            ),
            capture_output=True,
            text=True,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        if result.returncode == 0:
            return port
        last_error = _tail(log) or result.stderr.strip() or result.stdout.strip()
    raise ServiceUnavailable(f"pg_ctl start failed {_START_ATTEMPTS} times: {last_error}")


def _write_conf(data: Path, port: int, sockets: Path) -> None:
    """Overwrite the session settings in ``postgresql.auto.conf`` (read after the main file)."""
    settings = {
        "listen_addresses": "'127.0.0.1'",
        "port": str(port),
        "unix_socket_directories": f"'{sockets}'",
        # A throwaway cluster: durability only costs time.
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "max_connections": "200",
    }
    auto = data / "postgresql.auto.conf"
    auto.write_text("".join(f"{key} = {value}\n" for key, value in settings.items()))
    auto.chmod(0o600)
    user = _server_user()
    if user is not None:
        os.chown(auto, user.pw_uid, user.pw_gid)


def _stop(binaries: _Binaries, root: Path) -> None:
    """Stop the cluster (fast: rolls back open transactions) and delete its directory."""
    try:
        subprocess.run(
            _as_server_user(
                [binaries.pg_ctl, "stop", "-m", "fast", "-w", "-D", str(root / "data")]
            ),
            capture_output=True,
            check=False,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
    finally:
        _remove(root)


def _reap_orphans() -> None:
    """Stop and delete dedicated clusters left by sessions that died without cleaning up."""
    if not Path("/proc/self/stat").exists():
        return  # No way to tell a live owner from a reused pid: leave them alone.
    binaries = _find_binaries()
    temp = Path(tempfile.gettempdir())
    for root in temp.glob(f"{_DEDICATED_PREFIX}*"):
        try:
            owner = (root / _OWNER_FILE).read_text().strip()
            pid = int(owner.split(":", 1)[0])
        except (OSError, ValueError):
            continue
        if _process_identity(pid) == owner or (":" not in owner and _alive(pid)):
            continue
        if binaries is not None and (root / "data" / "postmaster.pid").exists():
            subprocess.run(
                _as_server_user(
                    [binaries.pg_ctl, "stop", "-m", "immediate", "-D", str(root / "data")]
                ),
                capture_output=True,
                check=False,
                timeout=60,
                stdin=subprocess.DEVNULL,
            )
        _remove(root)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _process_identity(pid: int) -> str:
    """``pid:starttime``: unlike the pid alone, not matched by a later process reusing it."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return f"{pid}:gone"
    # Field 22 (start time); the command name in parentheses may contain spaces.
    fields = stat_line.rsplit(")", 1)[-1].split()
    return f"{pid}:{fields[19]}"


def _remove(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)


def _run(args: list[str], what: str) -> None:
    result = subprocess.run(
        args, capture_output=True, text=True, check=False, timeout=120, stdin=subprocess.DEVNULL
    )
    if result.returncode != 0:
        detail = (result.stderr.strip() or result.stdout.strip()).splitlines()
        raise ServiceUnavailable(f"{what} failed: {detail[-1] if detail else 'no output'}")


def _tail(log: Path, lines: int = 3) -> str:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return ""
    return " | ".join(line for line in text.strip().splitlines()[-lines:])


def _check_reachable(url: str) -> None:
    try:
        with psycopg.connect(url, connect_timeout=10) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        raise ServiceUnavailable(
            f"cannot connect to PostgreSQL at {_redacted(url)}: {_one_line(exc)}"
        ) from exc


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
