# syntax=docker/dockerfile:1
#
# InfiniteScribe: `docker build -t infinitescribe .` then `docker run --rm infinitescribe --help`.
# The builder resolves the locked dependencies with uv; the runtime image holds only the
# virtual environment and runs as an unprivileged user with its data under /data.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# The uv release that wrote uv.lock.
FROM ghcr.io/astral-sh/uv:0.13.9 AS uv

FROM ${PYTHON_IMAGE} AS builder
COPY --from=uv /uv /usr/local/bin/uv
# Bytecode is compiled once here rather than at every container start; copies instead of
# hard links because the cache is a separate mount; the base image's Python only.
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src

# Dependencies first: this layer is reused until pyproject.toml or uv.lock change.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project --no-editable

# Then the project itself, installed as a regular (non-editable) package so the runtime
# image needs no source tree. README.md is the package's readme, required to build it.
COPY README.md ./
COPY graphs ./graphs
COPY memory ./memory
COPY migrations ./migrations
COPY nodes ./nodes
COPY server ./server
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable

FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 scribe \
    && useradd --system --uid 10001 --gid scribe --home-dir /home/scribe --create-home \
        --shell /usr/sbin/nologin scribe \
    && mkdir -p /data \
    && chown scribe:scribe /data
# Same path as in the builder: the venv's scripts name their interpreter by absolute path.
# Owned by root, so the running user cannot change its own code.
COPY --from=builder /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SCRIBE_DATA_DIR=/data
USER scribe
WORKDIR /data
VOLUME ["/data"]
ENTRYPOINT ["scribe"]
CMD ["--help"]
