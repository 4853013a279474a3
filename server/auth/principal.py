"""Who is calling: the principal every owned resource is checked against."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: a user, through a JWT access token or one of their API keys.

    ``user_id`` is the owner id stored on threads, runs, novels and traces; another
    principal asking for them gets 404, never data.
    """

    user_id: str
    email: str
    username: str | None
    via: Literal["jwt", "api_key"]
