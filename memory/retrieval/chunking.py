"""Split a chapter into passages for the retrieval index.

Passages follow the prose's own structure: short paragraphs are merged until a passage
reaches ``target_words`` (words, or characters of Chinese, Japanese or Korean text), an
overlong paragraph is cut between sentences, and no passage exceeds ``max_words`` (a
single monstrous sentence is cut between words as a last resort). Merged paragraphs keep
their blank-line separation so a retrieved passage reads naturally.
"""

from __future__ import annotations

import re

from errors import InvalidInput
from memory.text import has_cjk, text_length

# A sentence ends at . ! ? or an ellipsis, optionally followed by closing quotes or
# brackets, and is followed by whitespace. Abbreviations ("Mr. Venn") may cause an extra
# cut; that only makes a passage boundary slightly earlier, never loses text.
# CJK full stops end a sentence with or without a space after them.
_SENTENCE_END = re.compile(
    r"(?<=[.!?\u2026])[\"'\u201d\u2019)\]]*\s+"
    r"|(?<=[\u3002\uff01\uff1f])[\u201d\u300d\u300f\uff09]*\s*"
)
_BLANK_LINE = re.compile(r"\n\s*\n")


def _words(text: str) -> int:
    """Words, or characters of CJK text (see :mod:`memory.text`)."""
    return text_length(text)


def _paragraphs(text: str) -> list[str]:
    """Non-empty paragraphs with internal whitespace collapsed; heading lines dropped."""
    kept = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    blocks = _BLANK_LINE.split("\n".join(kept))
    return [" ".join(block.split()) for block in blocks if block.strip()]


def _sentences(paragraph: str) -> list[str]:
    # Cut after each match, keeping end punctuation and closing quotes on the sentence.
    pieces = []
    start = 0
    for match in _SENTENCE_END.finditer(paragraph):
        end = match.start() + len(match.group(0).rstrip())
        pieces.append(paragraph[start:end].strip())
        start = match.end()
    pieces.append(paragraph[start:].strip())
    return [p for p in pieces if p]


def _hard_split(sentence: str, max_words: int) -> list[str]:
    if has_cjk(sentence) and " " not in sentence.strip():
        return [sentence[i : i + max_words] for i in range(0, len(sentence), max_words)]
    words = sentence.split()
    return [" ".join(words[i : i + max_words]) for i in range(0, len(words), max_words)]


def _pack(units: list[str], joiner: str, target_words: int, max_words: int) -> list[str]:
    """Greedily join units until a chunk reaches the target, never passing the maximum."""
    chunks: list[str] = []
    current: list[str] = []
    count = 0
    for unit in units:
        size = _words(unit)
        if current and (count >= target_words or count + size > max_words):
            chunks.append(joiner.join(current))
            current, count = [], 0
        current.append(unit)
        count += size
    if current:
        chunks.append(joiner.join(current))
    return chunks


def _split_long(paragraph: str, target_words: int, max_words: int) -> list[str]:
    units: list[str] = []
    for sentence in _sentences(paragraph):
        if _words(sentence) > max_words:
            units.extend(_hard_split(sentence, max_words))
        else:
            units.append(sentence)
    # CJK sentences follow one another without a space.
    return _pack(units, "" if has_cjk(paragraph) else " ", target_words, max_words)


def split_passages(text: str, *, target_words: int = 120, max_words: int = 220) -> list[str]:
    """Paragraph-aware passages of ``text``, in order, none empty, none over ``max_words``.

    Lines starting with ``#`` (chapter headings in the stored Markdown) are dropped.
    A last passage shorter than a quarter of the target is folded into the previous one
    when that stays within ``max_words``, so a chapter does not end on a scrap.
    """
    if target_words < 1 or max_words < target_words:
        raise InvalidInput(
            "need 1 <= target_words <= max_words",
            target_words=target_words,
            max_words=max_words,
        )
    segments: list[str] = []
    for paragraph in _paragraphs(text):
        if _words(paragraph) > max_words:
            segments.extend(_split_long(paragraph, target_words, max_words))
        else:
            segments.append(paragraph)
    passages = _pack(segments, "\n\n", target_words, max_words)
    if len(passages) >= 2:
        last = _words(passages[-1])
        if last * 4 < target_words and _words(passages[-2]) + last <= max_words:
            passages[-2:] = [passages[-2] + "\n\n" + passages[-1]]
    return passages
