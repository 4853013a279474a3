"""``scribe serve``: the real command serves the API with in-process workers, then stops
cleanly on SIGINT."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_client

from tests.services.base import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery staple"


def _wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"scribe serve exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("scribe serve did not become healthy")


def _start(port: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "server.cli",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def test_scribe_serve(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SCRIBE_", "OPENAI_"))},
        "SCRIBE_DATA_DIR": str(tmp_path / "data"),
        "SCRIBE_WORDS_PER_CHAPTER": "150",
        "SCRIBE_WORKER_CONCURRENCY": "1",
    }
    log = tmp_path / "serve.log"
    process = _start(port, env, log)
    try:
        _wait_healthy(url, process, log)
        async with httpx.AsyncClient(base_url=url) as http:
            registered = await http.post(
                "/api/v1/auth/register", json={"email": "c@example.com", "password": PASSWORD}
            )
            assert registered.status_code == 201
            login = await http.post(
                "/api/v1/auth/login", json={"email": "c@example.com", "password": PASSWORD}
            )
            token = login.json()["access_token"]
        client = get_client(url=url, headers={"Authorization": f"Bearer {token}"}, api_key=None)
        try:
            thread = await client.threads.create()
            values: Any = await client.runs.wait(
                thread["thread_id"],
                "novel",
                input={"premise": "A keeper finds a key.", "chapters": 1},
            )
            assert values["done"] is True
        finally:
            await client.aclose()
    finally:
        process.send_signal(signal.SIGINT)
        try:
            code = process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
    assert code == 0, log.read_text()[-2000:]
    assert (tmp_path / "data" / "scribe.db").exists()
