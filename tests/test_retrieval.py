"""Passage chunking and the Qdrant passage index (local mode on disk, real client)."""

from __future__ import annotations

import re
import warnings
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from errors import ConfigurationError, InvalidInput, StorageError
from memory.embeddings.hashing import HashingEmbedder
from memory.embeddings.port import Embedder
from memory.retrieval.chunking import split_passages
from memory.retrieval.qdrant import QdrantPassageIndex, collection_name, point_id

# --- chunking ---------------------------------------------------------------------------


def words_of(texts: Sequence[str]) -> list[str]:
    """Every word of the texts, in order."""
    return [w for text in texts for w in text.split()]


def sentence(i: int, length: int = 10) -> str:
    """A distinct sentence of ``length`` words ending with a full stop."""
    return " ".join([f"s{i}w{j}" for j in range(length - 1)] + [f"end{i}."])


def test_chunking_drops_headings_and_keeps_every_word() -> None:
    text = "# Chapter 3: The Key\n\nFirst paragraph here.\n\n  ## Aside\nSecond one.\n"
    passages = split_passages(text)
    assert passages == ["First paragraph here.\n\nSecond one."]
    assert "#" not in "".join(passages)


def test_chunking_merges_short_paragraphs_up_to_target() -> None:
    paragraphs = [" ".join(f"p{i}w{j}" for j in range(30)) for i in range(10)]
    passages = split_passages("\n\n".join(paragraphs), target_words=100, max_words=150)
    assert words_of(passages) == words_of(paragraphs)
    counts = [len(p.split()) for p in passages]
    assert all(c <= 150 for c in counts)
    # Each passage but the last was filled to the target before closing.
    assert all(c >= 100 for c in counts[:-1])
    # Paragraph boundaries survive inside a merged passage.
    assert passages[0].count("\n\n") == 3


def test_chunking_splits_long_paragraphs_at_sentence_ends() -> None:
    paragraph = " ".join(sentence(i) for i in range(40))  # 400 words in one paragraph
    passages = split_passages(paragraph, target_words=100, max_words=150)
    assert len(passages) >= 3
    assert words_of(passages) == paragraph.split()
    for passage in passages:
        assert len(passage.split()) <= 150
        assert re.search(r"end\d+\.$", passage), passage


def test_chunking_hard_splits_a_sentence_longer_than_max() -> None:
    monster = " ".join(f"w{i}" for i in range(500))
    passages = split_passages(monster, target_words=100, max_words=150)
    assert words_of(passages) == monster.split()
    assert all(len(p.split()) <= 150 for p in passages)


def test_chunking_folds_a_trailing_scrap_into_the_previous_passage() -> None:
    body = " ".join(f"a{i}" for i in range(120))
    passages = split_passages(body + "\n\nThe end.", target_words=120, max_words=220)
    assert len(passages) == 1
    assert passages[0].endswith("The end.")


def test_chunking_never_returns_empty_passages() -> None:
    assert split_passages("") == []
    assert split_passages("\n\n   \n# Only a heading\n\n") == []
    text = "\n\n\n".join(["One.", "", "   ", "Two!", "# Heading", "Three?"])
    passages = split_passages(text, target_words=1, max_words=5)
    assert passages == ["One.", "Two!", "Three?"]
    assert all(p.strip() for p in passages)


def test_chunking_rejects_inconsistent_limits() -> None:
    with pytest.raises(InvalidInput):
        split_passages("text", target_words=200, max_words=100)
    with pytest.raises(InvalidInput):
        split_passages("text", target_words=0)


# --- qdrant passage index ----------------------------------------------------------------

LIGHTHOUSE = (
    "Aldous the lighthouse keeper hid the brass key under the loose stone of the lamp room."
)
MARKET = "Traders shouted over baskets of herring and saffron in the crowded market square."
BATTLE = "Soldiers charged the ramparts while archers loosed arrows over the burning gate."
VOYAGE = "The sailor mended the torn sail as the ship rolled through the storm."


class RenamedEmbedder(Embedder):
    """A real hashing embedder published under another name (to collide collections)."""

    def __init__(self, name: str, dimension: int) -> None:
        self.name = name
        self.dimension = dimension
        self._inner = HashingEmbedder(dimension)

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Delegate to the hashing embedder."""
        return await self._inner.embed(texts)


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    """Where local-mode Qdrant keeps this test's data."""
    return tmp_path / "qdrant"


@pytest.fixture
async def index(store_path: Path) -> AsyncIterator[QdrantPassageIndex]:
    """A set-up local-mode index with a 256-dimensional hashing embedder."""
    idx = QdrantPassageIndex.from_path(store_path, HashingEmbedder(dimension=256))
    await idx.setup()
    try:
        yield idx
    finally:
        await idx.close()


async def test_search_finds_the_relevant_passage(index: QdrantPassageIndex) -> None:
    await index.index_chapter("novel-a", 1, [MARKET, LIGHTHOUSE, BATTLE, VOYAGE])
    hits = await index.search("novel-a", "the keeper's brass key", before_chapter=2, limit=4)
    assert len(hits) == 4
    assert hits[0].passage.text == LIGHTHOUSE
    assert hits[0].passage.index == 1
    assert hits[0].passage.chapter == 1
    assert hits[0].passage.novel_id == "novel-a"
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert len(await index.search("novel-a", "brass key", before_chapter=2, limit=2)) == 2
    assert await index.search("novel-a", "brass key", before_chapter=2, limit=0) == []


async def test_novels_are_isolated(index: QdrantPassageIndex) -> None:
    await index.index_chapter("novel-a", 1, [LIGHTHOUSE, MARKET])
    await index.index_chapter("novel-b", 1, [BATTLE, VOYAGE, LIGHTHOUSE + " Again."])
    hits_a = await index.search("novel-a", "brass key", before_chapter=10, limit=10)
    hits_b = await index.search("novel-b", "brass key", before_chapter=10, limit=10)
    assert {h.passage.novel_id for h in hits_a} == {"novel-a"}
    assert {h.passage.text for h in hits_a} == {LIGHTHOUSE, MARKET}
    assert {h.passage.novel_id for h in hits_b} == {"novel-b"}
    assert len(hits_b) == 3
    assert await index.count("novel-a") == 2
    assert await index.count("novel-b") == 3
    assert await index.search("novel-c", "brass key", before_chapter=10) == []


async def test_search_only_sees_earlier_chapters(index: QdrantPassageIndex) -> None:
    for chapter, text in enumerate([LIGHTHOUSE, MARKET, BATTLE], start=1):
        await index.index_chapter("novel-a", chapter, [text])
    query = "keeper key market soldiers"

    async def chapters_before(before: int) -> set[int]:
        hits = await index.search("novel-a", query, before_chapter=before, limit=10)
        return {h.passage.chapter for h in hits}

    assert await chapters_before(1) == set()
    assert await chapters_before(2) == {1}
    assert await chapters_before(3) == {1, 2}
    assert await chapters_before(4) == {1, 2, 3}


async def test_reindexing_is_idempotent(index: QdrantPassageIndex) -> None:
    passages = [LIGHTHOUSE, MARKET, BATTLE]
    assert await index.index_chapter("novel-a", 2, passages) == 3
    assert await index.index_chapter("novel-a", 2, passages) == 3
    assert await index.count("novel-a") == 3
    assert await index.count("novel-a", 2) == 3
    hits = await index.search("novel-a", "brass key", before_chapter=3, limit=10)
    assert sorted(h.passage.index for h in hits) == [0, 1, 2]


async def test_shorter_reindex_removes_stale_passages(index: QdrantPassageIndex) -> None:
    await index.index_chapter("novel-a", 1, [VOYAGE])
    await index.index_chapter("novel-a", 2, [LIGHTHOUSE, MARKET, BATTLE, VOYAGE])
    assert await index.index_chapter("novel-a", 2, ["A rewritten opening.", MARKET]) == 2
    assert await index.count("novel-a", 2) == 2
    assert await index.count("novel-a", 1) == 1
    hits = await index.search("novel-a", "lighthouse brass key", before_chapter=3, limit=10)
    texts = {(h.passage.chapter, h.passage.index, h.passage.text) for h in hits}
    assert texts == {(1, 0, VOYAGE), (2, 0, "A rewritten opening."), (2, 1, MARKET)}
    # An empty chapter clears it entirely.
    assert await index.index_chapter("novel-a", 2, []) == 0
    assert await index.count("novel-a", 2) == 0
    assert await index.count("novel-a") == 1


async def test_drop_novel_removes_only_that_novel(index: QdrantPassageIndex) -> None:
    await index.index_chapter("novel-a", 1, [LIGHTHOUSE, MARKET])
    await index.index_chapter("novel-a", 2, [BATTLE])
    await index.index_chapter("novel-b", 1, [VOYAGE])
    await index.drop_novel("novel-a")
    assert await index.count("novel-a") == 0
    assert await index.search("novel-a", "brass key", before_chapter=5) == []
    assert await index.count("novel-b") == 1
    await index.drop_novel("novel-unknown")  # dropping nothing is fine


async def test_count_per_chapter(index: QdrantPassageIndex) -> None:
    await index.index_chapter("novel-a", 1, [LIGHTHOUSE])
    await index.index_chapter("novel-a", 2, [MARKET, BATTLE])
    await index.index_chapter("novel-a", 3, [VOYAGE, LIGHTHOUSE, MARKET])
    assert [await index.count("novel-a", c) for c in (1, 2, 3, 4)] == [1, 2, 3, 0]
    assert await index.count("novel-a") == 6


async def test_data_persists_across_reopen(store_path: Path) -> None:
    embedder = HashingEmbedder(dimension=256)
    first = QdrantPassageIndex.from_path(store_path, embedder)
    await first.setup()
    await first.index_chapter("novel-a", 1, [LIGHTHOUSE, MARKET])
    await first.close()

    second = QdrantPassageIndex.from_path(store_path, embedder)
    try:
        await second.setup()
        assert await second.count("novel-a") == 2
        hits = await second.search("novel-a", "brass key", before_chapter=2, limit=1)
        assert hits[0].passage.text == LIGHTHOUSE
    finally:
        await second.close()


async def test_one_open_client_per_path(index: QdrantPassageIndex, store_path: Path) -> None:
    with pytest.raises(StorageError):
        QdrantPassageIndex.from_path(store_path, HashingEmbedder(dimension=256))


async def test_setup_is_idempotent(index: QdrantPassageIndex) -> None:
    await index.index_chapter("novel-a", 1, [LIGHTHOUSE])
    await index.setup()
    await index.setup()
    assert await index.count("novel-a") == 1


async def test_setup_rejects_a_collection_of_another_size(store_path: Path) -> None:
    first = QdrantPassageIndex.from_path(store_path, RenamedEmbedder("same-name", 64))
    await first.setup()
    await first.close()
    second = QdrantPassageIndex.from_path(store_path, RenamedEmbedder("same-name", 128))
    try:
        with pytest.raises(ConfigurationError) as caught:
            await second.setup()
        assert caught.value.data["existing"] == 64
        assert caught.value.data["expected"] == 128
    finally:
        await second.close()


async def test_use_before_setup_is_a_storage_error(store_path: Path) -> None:
    idx = QdrantPassageIndex.from_path(store_path, HashingEmbedder(dimension=256))
    try:
        with pytest.raises(StorageError):
            await idx.count("novel-a")
    finally:
        await idx.close()


async def test_local_mode_prints_no_warnings(store_path: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        idx = QdrantPassageIndex.from_path(store_path, HashingEmbedder(dimension=256))
        await idx.setup()
        await idx.index_chapter("novel-a", 1, [LIGHTHOUSE, MARKET])
        await idx.search("novel-a", "key", before_chapter=2)
        await idx.count("novel-a", 1)
        await idx.drop_novel("novel-a")
        await idx.close()
    assert [str(w.message) for w in caught] == []


def test_names_and_ids_are_stable() -> None:
    assert collection_name(HashingEmbedder(512)) == "passages__hashing-ngram-v1-512"
    assert collection_name(RenamedEmbedder("openai/text embed:3", 32)) == (
        "passages__openai_text_embed_3"
    )
    assert point_id("n", 1, 0) == point_id("n", 1, 0)
    assert len({point_id("n", 1, 0), point_id("n", 1, 1), point_id("n", 2, 0)}) == 3
    assert point_id("n", 1, 0) != point_id("m", 1, 0)


def test_open_requires_exactly_one_location(tmp_path: Path) -> None:
    embedder = HashingEmbedder(dimension=64)
    with pytest.raises(ConfigurationError):
        QdrantPassageIndex.open(embedder)
    with pytest.raises(ConfigurationError):
        QdrantPassageIndex.open(embedder, path=tmp_path, url="http://127.0.0.1:6333")
