"""Settings, validated once at the entry point (CLI or server) from the environment.

Nothing here is read at import time: call :func:`load_settings` where the program starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from errors import ConfigurationError
from nodes.llm.config import ModelConfig, RetryPolicy
from nodes.llm.structured import StructuredSetting
from nodes.schemas import AGENTS, Agent

OFFLINE = "offline"


_REQUEST_FIELDS = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "n",
        "response_format",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "seed",
        "tools",
        "tool_choice",
    }
)
"""Request fields scribe sets itself (from its own settings), so extra fields may not."""


def _own_fields(value: dict[str, Any]) -> dict[str, Any]:
    taken = sorted(_REQUEST_FIELDS & set(value))
    if taken:
        raise ValueError(
            f"may not set {', '.join(taken)}: scribe sets those itself "
            "(use its model, temperature, max_tokens, seed and structured_output settings)"
        )
    return value


ExtraBody = Annotated[dict[str, Any], AfterValidator(_own_fields)]
"""Server-specific request fields, sent as they are with every request of an agent."""


class AgentModelSettings(BaseModel):
    """Per-agent overrides, e.g. ``SCRIBE_WRITER__MODEL``; unset fields use the shared ones."""

    model: str | None = None
    base_url: str | None = None
    api_key: SecretStr | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=16, le=200_000)
    structured_output: StructuredSetting | None = None
    context_window: int | None = Field(default=None, ge=512, le=10_000_000)
    split_answers: bool | None = None
    extra_body: ExtraBody | None = None


class ModelPriceSettings(BaseModel):
    """One model's price in USD per million tokens."""

    model_config = ConfigDict(extra="forbid")

    input: float = Field(ge=0)
    output: float = Field(ge=0)


class Settings(BaseSettings):
    """Every setting of InfiniteScribe, with its environment variable."""

    model_config = SettingsConfigDict(
        env_prefix="SCRIBE_",
        env_nested_delimiter="__",
        env_ignore_empty=True,
        extra="ignore",
        populate_by_name=True,
    )

    data_dir: Path = Path(".scribe")
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "SCRIBE_DATABASE_URL")
    )
    world_backend: Literal["sql", "neo4j"] = "sql"
    """Where world memory lives: the SQL database, or Neo4j (``NEO4J_URL``)."""
    neo4j_url: str | None = Field(
        default=None, validation_alias=AliasChoices("NEO4J_URL", "SCRIBE_NEO4J_URL")
    )
    neo4j_user: str = Field(
        default="neo4j", validation_alias=AliasChoices("NEO4J_USER", "SCRIBE_NEO4J_USER")
    )
    neo4j_password: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("NEO4J_PASSWORD", "SCRIBE_NEO4J_PASSWORD")
    )
    neo4j_database: str = Field(
        default="neo4j", validation_alias=AliasChoices("NEO4J_DATABASE", "SCRIBE_NEO4J_DATABASE")
    )
    checkpoint_pool_size: int = Field(default=10, ge=1, le=200)
    """Connections in the Postgres checkpointer's pool."""
    redis_url: str | None = Field(
        default=None, validation_alias=AliasChoices("REDIS_URL", "SCRIBE_REDIS_URL")
    )
    qdrant_url: str | None = Field(
        default=None, validation_alias=AliasChoices("QDRANT_URL", "SCRIBE_QDRANT_URL")
    )
    qdrant_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("QDRANT_API_KEY", "SCRIBE_QDRANT_API_KEY")
    )

    # authentication of the HTTP server
    jwt_secret: SecretStr | None = None
    """HS256 key signing access tokens (``SCRIBE_JWT_SECRET``, at least 32 characters).

    Required to serve with ``DATABASE_URL`` set. On the embedded default, when unset, the
    server generates one at startup and keeps it in ``data_dir/jwt_secret`` (mode 0600) so
    tokens survive restarts; see :func:`server.auth.secret.resolve_jwt_secret`.
    """
    access_token_ttl_s: int = Field(default=900, ge=30, le=86_400)
    """Lifetime of a JWT access token, in seconds."""
    refresh_token_ttl_s: int = Field(default=30 * 86_400, ge=300, le=366 * 86_400)
    """Lifetime of a refresh token, in seconds (each rotation issues a fresh one)."""
    auth_rate_limit: int = Field(default=10, ge=1, le=1_000_000)
    """Requests per window to register, log in (per IP and email) or refresh (per IP)."""
    auth_rate_window_s: float = Field(default=60.0, gt=0, le=86_400)
    """Length of a rate-limit window, in seconds."""

    # shared model settings (any OpenAI-compatible endpoint)
    model: str | None = None
    base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("SCRIBE_BASE_URL", "OPENAI_BASE_URL")
    )
    api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("SCRIBE_API_KEY", "OPENAI_API_KEY")
    )
    temperature: float = Field(default=0.7, ge=0, le=2)
    max_tokens: int = Field(default=4096, ge=16, le=200_000)
    model_timeout_s: float = Field(default=120.0, gt=0)
    model_retries: int = Field(default=4, ge=1, le=10)
    structured_output: StructuredSetting = "auto"
    """How structured answers are asked for: ``json_schema`` (constrained decoding),
    ``json_object``, ``prompt``, or ``auto`` (``json_object`` on DeepSeek's API,
    ``json_schema`` elsewhere)."""
    context_window: int | None = Field(default=None, ge=512, le=10_000_000)
    """The model's context window in tokens; prompts are cut to fit it. Unset: no limit."""
    split_answers: bool = False
    """Ask for the largest structured answers (a chapter's claims: 13 lists) in three
    smaller calls. Small local models (up to a few billion parameters) fill short schemas
    far better; large models do not need it. Per agent: ``SCRIBE_REVIEWER__SPLIT_ANSWERS``."""
    model_seed: int | None = Field(default=None, ge=0, le=2**31 - 1)
    """Sampling seed for every model request, where the endpoint honours one."""
    extra_body: ExtraBody = Field(default_factory=dict)
    """Server-specific request fields sent with every model request (per agent too, which
    replaces it), e.g. ``SCRIBE_WRITER__EXTRA_BODY='{"repeat_penalty": 1.15,
    "repeat_last_n": 4096}'`` for llama.cpp's repetition penalty over the whole context."""

    offline_tokens_per_second: float | None = Field(default=None, gt=0)
    """Slow the offline model to a fixed streaming rate (benchmarks, crash tests)."""
    model_prices: dict[str, ModelPriceSettings] = Field(default_factory=dict)
    """USD per million tokens by model name, for cost estimates in traces, e.g.
    ``SCRIBE_MODEL_PRICES='{"gpt-4o-mini": {"input": 0.15, "output": 0.6}}'``. A model
    missing here has no estimated cost (the offline model and replays cost nothing)."""
    director: AgentModelSettings = AgentModelSettings()
    worldsmith: AgentModelSettings = AgentModelSettings()
    writer: AgentModelSettings = AgentModelSettings()
    reviewer: AgentModelSettings = AgentModelSettings()

    # embeddings: hashed n-grams offline, or an OpenAI-compatible endpoint
    embeddings_model: str | None = None
    embeddings_base_url: str | None = None
    embeddings_api_key: SecretStr | None = None
    embeddings_dimension: int = Field(default=512, ge=8, le=8192)

    # the writing loop
    max_revisions: int = Field(default=2, ge=0, le=10)
    accept_score: int = Field(default=6, ge=1, le=10)
    words_per_chapter: int = Field(default=900, ge=100, le=20_000)
    retrieval_limit: int = Field(default=4, ge=0, le=50)

    # the run engine (LangGraph-compatible API and ``scribe worker``)
    worker_concurrency: int = Field(default=2, ge=0, le=64)
    """Runs one process executes at once (0: the API process runs no workers)."""
    lease_s: float = Field(default=30.0, gt=0, le=3600)
    """A running run stays its worker's this long after a heartbeat; then it is reclaimed."""
    heartbeat_s: float = Field(default=5.0, gt=0, le=600)
    """How often a worker renews its lease and checks for cancellation."""
    worker_poll_s: float = Field(default=0.5, gt=0, le=60)
    run_timeout_s: float | None = Field(default=None, gt=0)
    """A run taking longer ends with status ``timeout`` (no limit by default)."""
    run_max_attempts: int = Field(default=3, ge=1, le=100)
    event_ttl_s: float = Field(default=3600.0, gt=0)
    """How long a run's stream events are kept after its last event (for replays)."""
    sse_heartbeat_s: float = Field(default=15.0, gt=0, le=600)

    @field_validator("jwt_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        # A short HMAC key can be brute-forced from one token; the message never shows it.
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters (e.g. secrets.token_urlsafe(48))")
        return value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        for agent in AGENTS:
            self.model_for(agent)
        if self.world_backend == "neo4j" and not self.neo4j_url:
            raise ValueError(
                "SCRIBE_WORLD_BACKEND=neo4j needs NEO4J_URL (e.g. bolt://localhost:7687)"
            )
        if self.database_url and not self.database_url.startswith(
            ("sqlite+aiosqlite://", "postgresql+asyncpg://", "postgresql://", "postgres://")
        ):
            raise ValueError(
                "DATABASE_URL must be sqlite+aiosqlite:///PATH or postgresql://USER:PASS@HOST/DB"
            )
        if self.heartbeat_s >= self.lease_s:
            raise ValueError("heartbeat_s must be shorter than lease_s")
        return self

    def agent_settings(self, agent: Agent) -> AgentModelSettings:
        """The per-agent override block."""
        block: AgentModelSettings = getattr(self, agent)
        return block

    def model_for(self, agent: Agent) -> ModelConfig | None:
        """The agent's model, or ``None`` for the offline model.

        The offline model is used when no model name is configured (or it is ``offline``).
        """
        own = self.agent_settings(agent)
        name = own.model or self.model
        base_url = own.base_url or self.base_url
        if name is None or name == OFFLINE:
            if own.base_url and not own.model and not self.model:
                raise ValueError(
                    f"SCRIBE_{agent.upper()}__BASE_URL is set but no model name: "
                    f"set SCRIBE_{agent.upper()}__MODEL or SCRIBE_MODEL"
                )
            return None
        key = own.api_key or self.api_key
        return ModelConfig(
            model=name,
            base_url=base_url,
            api_key=key.get_secret_value() if key else None,
            temperature=own.temperature if own.temperature is not None else self.temperature,
            max_tokens=own.max_tokens or self.max_tokens,
            timeout_s=self.model_timeout_s,
            structured_output=own.structured_output or self.structured_output,
            context_window=own.context_window or self.context_window,
            seed=self.model_seed,
            extra_body=own.extra_body if own.extra_body is not None else self.extra_body,
        )

    def splits_answers(self, agent: Agent) -> bool:
        """Whether ``agent`` is asked for its largest answers in parts (``split_answers``)."""
        own = self.agent_settings(agent).split_answers
        return own if own is not None else self.split_answers

    @property
    def retry(self) -> RetryPolicy:
        """Backoff for transient model failures."""
        return RetryPolicy(attempts=self.model_retries)

    @property
    def sql_url(self) -> str:
        """App data (and SQL world memory) URL for SQLAlchemy (async driver)."""
        if self.database_url is None:
            return f"sqlite+aiosqlite:///{self.data_dir / 'scribe.db'}"
        return to_sqlalchemy_url(self.database_url)

    @property
    def postgres_dsn(self) -> str | None:
        """The plain ``postgresql://`` DSN for the checkpointer, when on Postgres."""
        if self.database_url is None or self.database_url.startswith("sqlite"):
            return None
        return to_libpq_url(self.database_url)

    @property
    def checkpoint_path(self) -> Path:
        """SQLite checkpoint file of the embedded default."""
        return self.data_dir / "checkpoints.db"

    @property
    def qdrant_path(self) -> Path:
        """Qdrant local-mode folder of the embedded default."""
        return self.data_dir / "qdrant"

    def serve_problem(self) -> str | None:
        """Why ``scribe serve`` cannot run with these settings, or None.

        An API without in-process workers leaves runs to ``scribe worker`` processes; on
        the embedded default they would share this data folder, whose vector store one
        process alone can open, so the runs it accepts would wait forever.
        """
        if self.worker_concurrency == 0 and self.database_url is None and not self.qdrant_url:
            return (
                "SCRIBE_WORKER_CONCURRENCY=0 leaves runs to scribe worker processes, but on "
                f"the embedded default they cannot share {self.data_dir} (its vector store "
                "opens in one process only): keep in-process workers "
                "(SCRIBE_WORKER_CONCURRENCY=1 or more), or give workers shared services "
                "(DATABASE_URL, QDRANT_URL)"
            )
        return None


def to_sqlalchemy_url(url: str) -> str:
    """``postgresql://`` or ``postgres://`` → ``postgresql+asyncpg://`` (SQLite unchanged)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    return url


def to_libpq_url(url: str) -> str:
    """Any Postgres URL → the ``postgresql://`` form libpq and psycopg understand."""
    for prefix in ("postgresql+asyncpg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return url


def load_settings(**overrides: object) -> Settings:
    """Read and validate settings once; raises ConfigurationError with a readable line."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        raise ConfigurationError(f"invalid setting {where}: {first['msg']}") from exc
