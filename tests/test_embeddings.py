"""Embedders: the offline hashing embedding and the OpenAI-compatible HTTP client.

The HTTP client is tested against a real server on 127.0.0.1 that speaks the
``POST /v1/embeddings`` protocol, including scripted failures.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from errors import ConfigurationError, StorageError
from memory.embeddings.hashing import HashingEmbedder, features, normalise, stem
from memory.embeddings.openai import OpenAIEmbedder

# --- a small corpus of unrelated scenes ------------------------------------------------

CORPUS: dict[str, str] = {
    "lighthouse": (
        "Old Aldous, the lighthouse keeper, wore the brass key on a cord around his neck. "
        "Every evening he climbed the spiral stair, unlocked the lamp room with that key "
        "and trimmed the wick while the gulls wheeled over the rocks."
    ),
    "market": (
        "The market square was loud with traders. Fishwives shouted prices over baskets of "
        "herring, a spice merchant weighed saffron on tiny scales, and children stole "
        "apples from the fruit stalls when nobody looked."
    ),
    "battle": (
        "At dawn the army charged the walls. Soldiers raised ladders against the ramparts "
        "while archers loosed volley after volley, and the siege engines hurled stones that "
        "shattered the gatehouse towers."
    ),
    "voyage": (
        "The sailor mended the torn sail while the ship rolled in the swell. Below deck the "
        "crew bailed water and cursed the captain who had sailed into the storm."
    ),
    "kitchen": (
        "Grandmother kneaded the dough on the floured table, shaped the loaves and slid "
        "them into the oven. The smell of baking bread filled the cottage kitchen."
    ),
    "library": (
        "Dust lay thick on the shelves of the abandoned library. Mira pulled down a "
        "leather-bound atlas and found a folded map hidden between its brittle pages."
    ),
    "wedding": (
        "The wedding feast lasted until midnight. Musicians played reels, the bride danced "
        "with every cousin, and the groom toasted the guests with cider from the orchard."
    ),
    "hunt": (
        "Wolves howled in the pine forest as the hunters followed the tracks through fresh "
        "snow, their hounds straining at the leashes and their breath steaming."
    ),
}


def cosine(a: list[float], b: list[float]) -> float:
    """Cosine similarity of two vectors."""
    return sum(x * y for x, y in zip(a, b, strict=True)) / (
        math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    )


async def ranking(embedder: HashingEmbedder, query: str) -> list[str]:
    """Corpus keys ordered by similarity to the query, closest first."""
    keys = list(CORPUS)
    vectors = await embedder.embed([CORPUS[k] for k in keys])
    [q] = await embedder.embed([query])
    scores = {k: cosine(q, v) for k, v in zip(keys, vectors, strict=True)}
    return sorted(keys, key=lambda k: -scores[k])


# --- hashing embedder -------------------------------------------------------------------


async def test_hashing_vectors_are_unit_length_and_sized() -> None:
    embedder = HashingEmbedder(dimension=256)
    vectors = await embedder.embed([*CORPUS.values(), "", "the of and"])
    assert len(vectors) == len(CORPUS) + 2
    for vector in vectors:
        assert len(vector) == 256
        assert math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0, rel_tol=1e-9)


def test_hashing_name_carries_version_and_dimension() -> None:
    assert HashingEmbedder().name == "hashing-ngram-v1-512"
    assert HashingEmbedder(dimension=128).dimension == 128
    assert HashingEmbedder(dimension=128).name != HashingEmbedder(dimension=256).name
    with pytest.raises(ConfigurationError):
        HashingEmbedder(dimension=4)


async def test_hashing_is_deterministic_within_a_process() -> None:
    first = await HashingEmbedder().embed(list(CORPUS.values()))
    second = await HashingEmbedder().embed(list(CORPUS.values()))
    assert first == second


def test_hashing_is_deterministic_across_processes() -> None:
    # Different hash seeds would change anything built on Python's salted hash().
    text = CORPUS["lighthouse"]
    expected = HashingEmbedder(dimension=64).embed_one(text)
    script = (
        "import json, sys; from memory.embeddings.hashing import HashingEmbedder; "
        "print(json.dumps(HashingEmbedder(dimension=64).embed_one(sys.argv[1])))"
    )
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", script, text],
            capture_output=True,
            text=True,
            check=True,
            env=env,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )
        assert json.loads(out.stdout) == expected


async def test_large_batches_match_single_embeddings() -> None:
    # Above the threading threshold the work moves to a thread; results must not change.
    embedder = HashingEmbedder(dimension=128)
    texts = [f"{text} variant {i}" for i in range(12) for text in CORPUS.values()]
    assert len(texts) > 64
    assert await embedder.embed(texts) == [embedder.embed_one(t) for t in texts]


def test_normalise_and_stem() -> None:
    assert normalise("The Keeper\u2019s BRASS key\u2014rusted! Don't.") == [
        "the",
        "keeper",
        "brass",
        "key",
        "rusted",
        "dont",
    ]
    # NFKC folds compatibility forms such as the "fi" ligature and full-width letters.
    assert normalise("\ufb01sh \uff2b\uff45\uff59") == ["fish", "key"]
    for variants in (
        ("ship", "ships", "shipped", "shipping"),
        ("walk", "walks", "walked", "walking"),
        ("hope", "hoped", "hoping"),
        ("story", "stories"),
        ("key", "keys"),
    ):
        assert len({stem(v) for v in variants}) == 1, variants
    assert stem("brass") == "brass"
    assert stem("walk") != stem("talk")


def test_feature_groups_exclude_stop_words() -> None:
    groups = features("The keeper and the key")
    unigrams = groups[0][0]
    assert set(unigrams) == {"w:" + stem("keeper"), "w:key"}
    assert "b:" + stem("keeper") + " key" in groups[1][0]


async def test_similarity_ranks_the_matching_scene_first() -> None:
    embedder = HashingEmbedder()
    order = await ranking(embedder, "the lighthouse keeper's brass key")
    assert order[0] == "lighthouse"
    assert order.index("lighthouse") < order.index("market")
    assert order.index("lighthouse") < order.index("battle")
    assert (await ranking(embedder, "soldiers storming the ramparts during a siege"))[0] == (
        "battle"
    )
    assert (await ranking(embedder, "buying herring and saffron at the stalls"))[0] == "market"
    assert (await ranking(embedder, "a hidden map inside an old atlas"))[0] == "library"


async def test_inflected_queries_still_find_their_scene() -> None:
    embedder = HashingEmbedder()
    # Every content word differs in form from the passage ("sailor"/"sailors", ...).
    assert (await ranking(embedder, "sailors mending sails on rolling ships"))[0] == "voyage"
    assert (await ranking(embedder, "hunter following a wolf's track"))[0] == "hunt"
    [walked, walk, talked] = await embedder.embed(["walked", "walk", "talked"])
    assert cosine(walked, walk) > cosine(walked, talked)
    [ships, ship, shop] = await embedder.embed(["ships", "ship", "shop"])
    assert cosine(ships, ship) > cosine(ships, shop)


async def test_names_match_through_character_ngrams() -> None:
    embedder = HashingEmbedder()
    # A shortened name shares no word with the full one, only its leading 4-grams.
    [query] = await embedder.embed(["Aldous"])
    [near, far] = await embedder.embed(["Aldo", "Mira"])
    assert cosine(query, near) > cosine(query, far)
    # The possessive is dropped, so the name itself matches exactly.
    [possessive] = await embedder.embed(["Aldous's"])
    assert cosine(query, possessive) == pytest.approx(1.0)


# --- a real OpenAI-compatible endpoint on loopback -------------------------------------


def fake_vector(text: str, dimension: int) -> list[float]:
    """The server's deterministic embedding: bytes of repeated SHA-256 digests."""
    raw = b""
    counter = 0
    while len(raw) < dimension:
        raw += hashlib.sha256(f"{counter}:{text}".encode()).digest()
        counter += 1
    return [(b - 127.5) / 127.5 for b in raw[:dimension]]


@dataclass
class Endpoint:
    """Behaviour and request log of the loopback embeddings server."""

    dimension: int
    failures: list[int] = field(default_factory=list)
    """Status codes to answer, in order, before answering normally."""
    slow_first: float = 0.0
    """Seconds to stall the first request (to provoke a client timeout)."""
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def make_handler(endpoint: Endpoint) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to one endpoint's state."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            """Keep test output clean."""

        def _send(self, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
            payload = json.dumps(body).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout test)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with endpoint.lock:
                endpoint.requests.append({"path": self.path, **body})
                first = len(endpoint.requests) == 1
                failure = endpoint.failures.pop(0) if endpoint.failures else None
            if first and endpoint.slow_first:
                time.sleep(endpoint.slow_first)
            if self.path != "/v1/embeddings":
                self._send(404, {"error": {"message": "no such route"}}, {})
                return
            if failure is not None:
                error = {"error": {"message": f"scripted {failure}", "type": "test"}}
                self._send(failure, error, {"retry-after": "0"} if failure == 429 else {})
                return
            texts = body["input"]
            data = [
                {
                    "object": "embedding",
                    "index": i,
                    "embedding": fake_vector(text, endpoint.dimension),
                }
                for i, text in enumerate(texts)
            ]
            # Answer out of order: the client must sort by index.
            data.reverse()
            usage = {"prompt_tokens": len(texts), "total_tokens": len(texts)}
            answer = {"object": "list", "data": data, "model": body["model"], "usage": usage}
            self._send(200, answer, {})

    return Handler


@pytest.fixture
def server() -> Iterator[tuple[str, Endpoint]]:
    """A running loopback embeddings server (dimension 16) and its state."""
    endpoint = Endpoint(dimension=16)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(endpoint))
    httpd.daemon_threads = True
    httpd.block_on_close = False
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", endpoint
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def embedder_for(base_url: str, **options: Any) -> OpenAIEmbedder:
    """An embedder with fast backoff for tests."""
    settings: dict[str, Any] = {"backoff_base": 0.01, "backoff_max": 0.05, "timeout": 5.0}
    settings.update(options)
    return OpenAIEmbedder(base_url=base_url, model="test-embed", dimension=16, **settings)


async def test_openai_embedder_batches_and_keeps_order(server: tuple[str, Endpoint]) -> None:
    base_url, endpoint = server
    embedder = embedder_for(base_url, batch_size=64)
    texts = [f"passage number {i}" for i in range(130)]
    try:
        vectors = await embedder.embed(texts)
    finally:
        await embedder.close()
    assert vectors == [fake_vector(t, 16) for t in texts]
    assert [len(r["input"]) for r in endpoint.requests] == [64, 64, 2]
    assert all(r["encoding_format"] == "float" for r in endpoint.requests)
    assert all(r["model"] == "test-embed" for r in endpoint.requests)
    assert "dimensions" not in endpoint.requests[0]
    assert embedder.name == "openai-test-embed-16"


async def test_openai_embedder_retries_after_429(server: tuple[str, Endpoint]) -> None:
    base_url, endpoint = server
    endpoint.failures = [429]
    embedder = embedder_for(base_url)
    try:
        vectors = await embedder.embed(["the brass key"])
    finally:
        await embedder.close()
    assert vectors == [fake_vector("the brass key", 16)]
    assert len(endpoint.requests) == 2


async def test_openai_embedder_retries_a_timeout(server: tuple[str, Endpoint]) -> None:
    base_url, endpoint = server
    endpoint.slow_first = 1.5
    embedder = embedder_for(base_url, timeout=0.3)
    try:
        vectors = await embedder.embed(["slow", "then fast"])
    finally:
        await embedder.close()
    assert vectors == [fake_vector("slow", 16), fake_vector("then fast", 16)]
    assert len(endpoint.requests) == 2


async def test_openai_embedder_gives_up_with_storage_error(
    server: tuple[str, Endpoint],
) -> None:
    base_url, endpoint = server
    endpoint.failures = [503, 500, 502, 503]
    embedder = embedder_for(base_url, max_attempts=3)
    try:
        with pytest.raises(StorageError) as caught:
            await embedder.embed(["never answered"])
    finally:
        await embedder.close()
    assert len(endpoint.requests) == 3
    assert caught.value.data["attempts"] == 3


async def test_openai_embedder_rejects_wrong_dimension(server: tuple[str, Endpoint]) -> None:
    base_url, endpoint = server
    endpoint.dimension = 8
    embedder = embedder_for(base_url)
    try:
        with pytest.raises(ConfigurationError) as caught:
            await embedder.embed(["a", "b"])
    finally:
        await embedder.close()
    assert caught.value.data == {"model": "test-embed", "expected": 16, "received": 8}
    assert len(endpoint.requests) == 1


async def test_openai_embedder_does_not_retry_bad_credentials(
    server: tuple[str, Endpoint],
) -> None:
    base_url, endpoint = server
    endpoint.failures = [401]
    embedder = embedder_for(base_url, api_key="wrong")
    try:
        with pytest.raises(ConfigurationError):
            await embedder.embed(["a"])
    finally:
        await embedder.close()
    assert len(endpoint.requests) == 1


async def test_openai_embedder_sends_dimensions_when_asked(server: tuple[str, Endpoint]) -> None:
    base_url, endpoint = server
    embedder = embedder_for(base_url, send_dimensions=True)
    try:
        await embedder.embed(["", "x"])
    finally:
        await embedder.close()
    assert endpoint.requests[0]["dimensions"] == 16
    # The API refuses empty strings, so a blank text is sent as a single space.
    assert endpoint.requests[0]["input"] == [" ", "x"]


async def test_openai_embedder_unreachable_server_is_storage_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens on the port any more: every attempt is refused.
    embedder = embedder_for(f"http://127.0.0.1:{port}/v1", max_attempts=2)
    try:
        with pytest.raises(StorageError):
            await embedder.embed(["a"])
    finally:
        await embedder.close()
