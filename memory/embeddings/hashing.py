"""An offline embedding: signed feature hashing of words, word pairs and character 4-grams.

It needs no model and no network, so a fresh install can index and retrieve passages at
once. Meaning is carried lexically only: two passages are close when they share (stemmed)
words, adjacent word pairs and word fragments. That is enough to find "the scene with the
lighthouse key" among earlier chapters, not to match paraphrases with no shared words.

Vectors are deterministic across processes and machines because every feature is hashed
with ``hashlib.blake2b`` (Python's ``hash()`` is salted per process) and features are
accumulated in text order.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from itertools import pairwise

from errors import ConfigurationError
from memory.embeddings.port import Embedder
from memory.text import spaced_cjk

VERSION = "v1"
"""Bump whenever features or weights change: the name (and so the collection) changes too.
(Still v1 after CJK characters became words of their own: vectors of text without CJK
are unchanged, and CJK text was not searchable before.)"""

# Only the most frequent function words: they would dominate the unigram group while
# saying nothing about content. Pronouns stay out of the list on purpose ("her key").
STOP_WORDS: frozenset[str] = frozenset(
    {
        "a", "an", "and", "are", "as", "at", "be", "been", "but", "by", "for", "from",
        "had", "has", "have", "in", "into", "is", "it", "its", "of", "on", "or", "so",
        "than", "that", "the", "then", "there", "these", "this", "those", "to", "was",
        "were", "will", "with",
    }
)  # fmt: skip

UNIGRAM_WEIGHT = 1.0
BIGRAM_WEIGHT = 0.6
CHAR_WEIGHT = 0.5
CHAR_N = 4

# Texts above this count are hashed in a worker thread so a long chapter does not stall
# the event loop that also serves HTTP requests.
_THREAD_THRESHOLD = 64

_POSSESSIVE = re.compile(r"['\u2019\u2018\u02bc`]s\b")
_APOSTROPHES = re.compile(r"['\u2019\u2018\u02bc`]")
_NON_WORD = re.compile(r"[\W_]+")
_VOWELS = frozenset("aeiouy")
_UNDOUBLE = frozenset("bdfgmnprt")
_PERSON = b"scribe-hash-" + VERSION.encode()


def normalise(text: str) -> list[str]:
    """Lower-cased NFKC words without punctuation; "keeper's" -> "keeper", "don't" -> "dont".

    Each CJK character is a word of its own (those scripts put no spaces between words),
    so Chinese text gets character unigrams and bigrams, the usual features of CJK search.
    """
    text = unicodedata.normalize("NFKC", text).lower()
    text = _APOSTROPHES.sub("", _POSSESSIVE.sub("", text))
    return _NON_WORD.sub(" ", spaced_cjk(text)).split()


def _has_vowel(stem: str) -> bool:
    return any(ch in _VOWELS for ch in stem)


@lru_cache(maxsize=1 << 16)
def stem(word: str) -> str:
    """A light suffix-stripping stemmer: "ships"/"ship", "walked"/"walking"/"walk".

    Deliberately crude (one suffix rule, then un-doubling and a final "e"): it only has to
    send common inflections of one word to the same key, never to produce real words.
    """
    if len(word) <= 3 or not word.isalpha():
        return word
    base = word
    stripped_verb = False
    if word.endswith(("ies", "ied")) and len(word) > 4:
        base = word[:-3] + "y"
    elif word.endswith("sses"):
        base = word[:-2]
    elif word.endswith(("ss", "us", "is")):
        base = word
    elif word.endswith("s"):
        base = word[:-1]
    elif word.endswith("ing") and len(word) > 5 and _has_vowel(word[:-3]):
        base, stripped_verb = word[:-3], True
    elif word.endswith("ed") and not word.endswith("eed") and len(word) > 4:
        if _has_vowel(word[:-2]):
            base, stripped_verb = word[:-2], True
    elif word.endswith("ly") and len(word) > 5 and _has_vowel(word[:-2]):
        base = word[:-2]
    if stripped_verb and len(base) > 2 and base[-1] == base[-2] and base[-1] in _UNDOUBLE:
        base = base[:-1]
    if base.endswith("e") and len(base) > 3:
        base = base[:-1]
    return base


@lru_cache(maxsize=1 << 18)
def _digest(feature: str) -> int:
    return int.from_bytes(
        hashlib.blake2b(feature.encode("utf-8"), digest_size=8, person=_PERSON).digest(), "little"
    )


@lru_cache(maxsize=1 << 16)
def _char_grams(word: str) -> tuple[str, ...]:
    padded = f"<{word}>"
    if len(padded) <= CHAR_N:
        return ("c:" + padded,)
    return tuple("c:" + padded[i : i + CHAR_N] for i in range(len(padded) - CHAR_N + 1))


def features(text: str) -> list[tuple[dict[str, float], float]]:
    """The weighted feature groups of a text: (feature -> 1 + log tf, group weight).

    Exposed for tests and debugging; :meth:`HashingEmbedder.embed` hashes these.
    """
    words = normalise(text)
    content = [w for w in words if w not in STOP_WORDS] or words
    stems = [stem(w) for w in content]
    unigrams = Counter("w:" + s for s in stems)
    bigrams = Counter(f"b:{a} {b}" for a, b in pairwise(stems))
    chars: Counter[str] = Counter()
    for word in content:
        chars.update(_char_grams(word))
    groups = [(unigrams, UNIGRAM_WEIGHT), (bigrams, BIGRAM_WEIGHT), (chars, CHAR_WEIGHT)]
    return [
        ({key: 1.0 + math.log(tf) for key, tf in counts.items()}, weight)
        for counts, weight in groups
        if counts
    ]


class HashingEmbedder(Embedder):
    """Deterministic, offline, lexical embedding by signed feature hashing.

    Each feature group (unigrams of stemmed content words, bigrams of adjacent content
    words, character 4-grams of words) is scaled to its own weight before hashing, so a
    long word's many fragments cannot outvote the words themselves. The result is
    L2-normalised; an empty text maps to one fixed unit vector rather than zeros, because
    cosine similarity is undefined for a zero vector.
    """

    def __init__(self, dimension: int = 512) -> None:
        if dimension < 16:
            raise ConfigurationError(
                "hashing embedding dimension must be at least 16", dimension=dimension
            )
        self.dimension = dimension
        self.name = f"hashing-ngram-{VERSION}-{dimension}"

    def embed_one(self, text: str) -> list[float]:
        """The vector of one text (synchronous; :meth:`embed` is the port method)."""
        dim = self.dimension
        digest = _digest
        vector = [0.0] * dim
        groups = features(text) or [({"empty:": 1.0}, 1.0)]
        for weights, group_weight in groups:
            scale = group_weight / math.sqrt(sum(v * v for v in weights.values()))
            for key, value in weights.items():
                h = digest(key)
                vector[h % dim] += value * scale if h >> 63 else -value * scale
        norm = math.sqrt(sum(x * x for x in vector))
        if norm == 0.0:
            # Every feature cancelled out in its bucket: astronomically rare, still defined.
            vector[_digest("empty:") % self.dimension] = 1.0
            return vector
        return [x / norm for x in vector]

    def embed_many(self, texts: Sequence[str]) -> list[list[float]]:
        """Vectors of several texts, in order (synchronous)."""
        return [self.embed_one(text) for text in texts]

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in order."""
        if len(texts) > _THREAD_THRESHOLD:
            return await asyncio.to_thread(self.embed_many, list(texts))
        return self.embed_many(texts)
