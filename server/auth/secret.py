"""The JWT signing secret: from settings, or generated once and kept in the data folder.

Resolved when the server starts (never at import). ``SCRIBE_JWT_SECRET`` wins. Without it,
the embedded default (no ``DATABASE_URL``) generates a random secret and writes it to
``data_dir/jwt_secret`` with mode 0600, so tokens stay valid across restarts. A server on a
shared database must be given the secret: replicas with their own data folders would each
invent a different one and refuse each other's tokens.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import stat
from pathlib import Path

from errors import ConfigurationError
from server.auth.tokens import MIN_SECRET_LENGTH
from server.settings import Settings

SECRET_FILE = "jwt_secret"
_MODE = 0o600

log = logging.getLogger("scribe.auth")


def resolve_jwt_secret(settings: Settings) -> str:
    """The secret signing access tokens; see the module docstring for where it comes from.

    Raises :class:`ConfigurationError` when serving on a shared database without
    ``SCRIBE_JWT_SECRET``, or when the stored secret file is unusable.
    """
    if settings.jwt_secret is not None:
        return settings.jwt_secret.get_secret_value()
    if settings.database_url is not None:
        raise ConfigurationError(
            "SCRIBE_JWT_SECRET is required when DATABASE_URL is set (every replica must sign "
            "with the same key); generate one with: "
            "python -c 'import secrets; print(secrets.token_urlsafe(48))'"
        )
    return load_or_create_secret(settings.data_dir / SECRET_FILE)


def load_or_create_secret(path: Path) -> str:
    """The secret stored at ``path``, created (mode 0600) when the file does not exist.

    Creation is atomic: the secret is written to a private temporary file that is then
    hard-linked into place, so a concurrent starter either wins or reads the full secret.
    """
    if path.exists():
        return _read(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _MODE)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            # The umask may only remove bits; set the mode explicitly all the same.
            os.fchmod(handle.fileno(), _MODE)
            handle.write(secrets.token_urlsafe(48) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            # Another process created it first: use theirs.
            return _read(path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
    log.info("generated a JWT signing secret in %s (mode 0600)", path)
    return _read(path)


def _read(path: Path) -> str:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        # Readable by others means anyone on the machine could mint tokens: tighten it.
        log.warning("%s had mode %o; setting it to 0600", path, mode)
        path.chmod(_MODE)
    secret = path.read_text(encoding="utf-8").strip()
    if len(secret) < MIN_SECRET_LENGTH:
        raise ConfigurationError(
            f"{path} does not hold a usable JWT secret (at least {MIN_SECRET_LENGTH} "
            "characters); delete it to generate a new one (every session ends)"
        )
    return secret
