"""LangSmith tracing through its standard environment variables keeps working.

``scribe write`` runs with ``LANGSMITH_TRACING=true`` and ``LANGSMITH_ENDPOINT`` pointing
at a loopback HTTP server standing in for LangSmith (there is no network here); the
server must receive the graph's runs and the model calls named ``<agent>.<task>``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
COMMAND = (sys.executable, "-m", "server.cli", "write")


class _Collector(BaseHTTPRequestHandler):
    """Answers like an empty LangSmith and keeps every request body."""

    bodies: ClassVar[list[tuple[str, bytes]]] = []
    lock: ClassVar[threading.Lock] = threading.Lock()

    def _reply(self, payload: object) -> None:
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        """``/info`` and anything else: an empty configuration."""
        self._reply({})

    def do_POST(self) -> None:
        """Run ingestion (batch or multipart): keep the body."""
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        with self.lock:
            self.bodies.append((self.path, body))
        self._reply({})

    do_PATCH = do_POST

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def langsmith() -> Iterator[str]:
    """A loopback stand-in for the LangSmith API; its URL."""
    _Collector.bodies = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_standard_langsmith_variables_trace_every_agent(tmp_path: Path, langsmith: str) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SCRIBE_", "LANGSMITH_", "LANGCHAIN_", "OPENAI_"))
    }
    env.update(
        {
            "SCRIBE_DATA_DIR": str(tmp_path / "data"),
            "SCRIBE_WORDS_PER_CHAPTER": "100",
            "LANGSMITH_TRACING": "true",
            "LANGSMITH_ENDPOINT": langsmith,
            "LANGSMITH_API_KEY": "ls-test-key",
            "LANGSMITH_PROJECT": "scribe-test",
            # plain bodies, so the test can read them
            "LANGSMITH_DISABLE_RUN_COMPRESSION": "true",
        }
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "server.cli",
            "write",
            "--premise",
            "A keeper finds a key.",
            "--chapters",
            "1",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    with _Collector.lock:
        posted = b"\n".join(body for path, body in _Collector.bodies if "runs" in path)
    text = posted.decode("utf-8", errors="replace")
    assert text, f"LangSmith received no runs: {[p for p, _ in _Collector.bodies]}"
    for name in (
        "director.story_plan",
        "worldsmith.world_places",
        "worldsmith.world_cast",
        "worldsmith.world_links",
        "writer.chapter_draft",
        "reviewer.chapter_review",
    ):
        assert name in text, f"no {name} run reached LangSmith"
    assert "agent:writer" in text
    assert "scribe-test" in text
