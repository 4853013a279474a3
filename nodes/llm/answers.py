"""What real models do to answers, recognised by plain rules on the text.

Real instruct models, small ones most of all, refuse ("I will not reproduce copyrighted
material."), answer nothing, stop mid-sentence at ``max_tokens``, or fall into a loop
that repeats a sentence or a whole paragraph until the token limit. The gateway uses the
rules here to notice each case (a loop while the answer still streams, so the tokens are
not wasted), to trim what can be trimmed and to re-ask for what cannot.

Words are counted so that texts without spaces between words (Chinese, Japanese) count
each ideograph or kana as a word, close to how their writers count length.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

RetryCause = Literal["invalid", "truncated", "refusal", "empty", "loop", "too_short"]
"""Why an answer was asked for again (recorded with the call that re-asks)."""

_WORD = re.compile(
    r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]"
    # Anything else between spaces, but not CJK punctuation on its own.
    r"|[^\s\u3000-\u303f\uff01-\uff0f\uff1a-\uff20\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+"
)
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def word_count(text: str) -> int:
    """Words in ``text``; each CJK character counts as one."""
    return len(_WORD.findall(text))


# --- refusals -------------------------------------------------------------------------

_REFUSAL = re.compile(
    r"^\W*(?:"
    r"I(?:'m| am) (?:sorry|afraid|unable|not able)"
    r"|I (?:can(?:'|no)t|cannot|won't|will not|must decline|do not feel comfortable"
    r"|don't feel comfortable|apologi[sz]e)"
    r"|(?:Sorry|Unfortunately),? (?:but )?I"
    r"|As an AI"
    r"|I'm just an AI"
    r")",
    re.IGNORECASE,
)
_REFUSAL_MAX_WORDS = 80
"""A refusal is short; a long answer that opens with "I can't believe..." is prose."""


def is_refusal(text: str) -> bool:
    """Whether ``text`` is a refusal to do the task rather than an answer."""
    stripped = text.strip()
    return bool(_REFUSAL.match(stripped)) and word_count(stripped) <= _REFUSAL_MAX_WORDS


# --- repetition loops -----------------------------------------------------------------

# Sentence ends and closing quotes, CJK full-width forms included (as escapes).
_ENDS = ".!?\u3002\uff01\uff1f\u2026"
_CLOSERS = "\"'\u201d\u2019\u300d\u300f)"
# CJK sentences end at their full stop whether or not a space follows.
_SENTENCE_END = re.compile(
    rf"(?<=[{_ENDS}])[{_CLOSERS}]*\s+|(?<=[\u3002\uff01\uff1f])[{_CLOSERS}]*(?=\S)"
)
_NORMALISE = re.compile(r"[\W_]+", re.UNICODE)


@dataclass(frozen=True)
class LoopPolicy:
    """When repetition counts as a loop.

    A sentence of at least ``min_sentence_chars`` characters occurring ``sentence_repeats``
    times, or a run of ``ngram`` words occurring ``ngram_repeats`` times, is a loop. Prose
    repeats short sentences ("He nodded.") and refrains legitimately; these thresholds
    only catch what a model stuck in a loop produces.
    """

    min_sentence_chars: int = 40
    sentence_repeats: int = 3
    ngram: int = 12
    ngram_repeats: int = 3


DEFAULT_LOOP_POLICY = LoopPolicy()


def loop_start(text: str, policy: LoopPolicy = DEFAULT_LOOP_POLICY) -> int | None:
    """Where a repetition loop begins in ``text`` (the offset of the first repeat of the
    looping sentence or word run), or ``None`` when there is no loop."""
    start = _sentence_loop(text, policy)
    ngram = _ngram_loop(text, policy)
    found = [s for s in (start, ngram) if s is not None]
    return min(found) if found else None


def _sentences(text: str, policy: LoopPolicy) -> list[tuple[int, str]]:
    """Each sentence of ``min_sentence_chars`` or more: its offset and normalised key."""
    found: list[tuple[int, str]] = []
    position = 0
    for piece in _SENTENCE_END.split(text):
        offset = text.find(piece, position)
        position = offset + len(piece) if offset >= 0 else position
        key = _NORMALISE.sub(" ", piece).strip().lower()
        if len(key) >= policy.min_sentence_chars:
            found.append((offset, key))
    return found


CJK_RUN_FACTOR = 2
"""A CJK character is about half a word: a run of ``ngram`` words is ``2 * ngram``
characters of Chinese or Japanese, or every name and stock phrase would look like a loop."""


def _word_runs(text: str, n: int) -> list[tuple[int, tuple[str, ...]]]:
    """Each run of ``n`` normalised words (``2n`` characters of CJK text): its offset and
    words."""
    matches = list(_WORD.finditer(text))
    if sum(1 for m in matches if _CJK.fullmatch(m.group(0))) * 2 > len(matches):
        n *= CJK_RUN_FACTOR
    words = [_NORMALISE.sub("", m.group(0)).lower() for m in matches]
    return [(matches[i].start(), tuple(words[i : i + n])) for i in range(len(words) - n + 1)]


def _sentence_loop(text: str, policy: LoopPolicy) -> int | None:
    seen: dict[str, list[int]] = {}
    for offset, key in _sentences(text, policy):
        places = seen.setdefault(key, [])
        places.append(offset)
        if len(places) >= policy.sentence_repeats:
            return places[1]
    return None


def _ngram_loop(text: str, policy: LoopPolicy) -> int | None:
    runs = _word_runs(text, policy.ngram)
    if len(runs) + policy.ngram - 1 < policy.ngram * policy.ngram_repeats:
        return None
    counts: Counter[tuple[str, ...]] = Counter()
    first_repeat: dict[tuple[str, ...], int] = {}
    for offset, gram in runs:
        counts[gram] += 1
        if counts[gram] == 2:
            first_repeat[gram] = offset
        if counts[gram] >= policy.ngram_repeats:
            return first_repeat[gram]
    return None


@dataclass(frozen=True)
class _Fingerprint:
    """The long sentences and word runs of a text, to find them again in another."""

    sentences: frozenset[str]
    runs: frozenset[tuple[str, ...]]


def _fingerprint(text: str, policy: LoopPolicy) -> _Fingerprint:
    return _Fingerprint(
        frozenset(key for _, key in _sentences(text, policy)),
        frozenset(gram for _, gram in _word_runs(text, policy.ngram)),
    )


def _first_echo(seen: _Fingerprint, text: str, policy: LoopPolicy) -> int | None:
    sentence = next((o for o, key in _sentences(text, policy) if key in seen.sentences), None)
    run = next((o for o, gram in _word_runs(text, policy.ngram) if gram in seen.runs), None)
    found = [o for o in (sentence, run) if o is not None]
    return min(found) if found else None


def echo_start(earlier: str, text: str, policy: LoopPolicy = DEFAULT_LOOP_POLICY) -> int | None:
    """Where ``text``, written to continue ``earlier``, first repeats it: the offset of its
    first sentence (of ``min_sentence_chars`` or more) or ``ngram``-word run that
    ``earlier`` already has; ``None`` when it repeats nothing. A continuation that goes
    back over its own text repeats it once, not three times, so once is the cut."""
    return _first_echo(_fingerprint(earlier, policy), text, policy)


RESTATED_SHARE = 0.5
"""A sentence whose four-word runs are at least this share from the text it continues
restates it (reworded a little, as small models do) rather than adding to it."""


def _quads(text: str) -> list[tuple[str, ...]]:
    words = [_NORMALISE.sub("", m.group(0)).lower() for m in _WORD.finditer(text)]
    words = [w for w in words if w]
    return [tuple(words[i : i + 4]) for i in range(len(words) - 3)] or [tuple(words)]


def restated_end(known: set[tuple[str, ...]], text: str) -> int:
    """Where the sentences at the start of ``text`` that restate a text (whose four-word
    runs are ``known``) end: the offset of its first new sentence, ``len(text)`` when
    every sentence so far restates it."""
    position = 0
    for piece in _SENTENCE_END.split(text):
        offset = text.find(piece, position)
        position = offset + len(piece) if offset >= 0 else position
        if not piece.strip():
            continue
        quads = _quads(piece)
        if sum(1 for q in quads if q in known) < RESTATED_SHARE * len(quads):
            return offset
    return len(text)


def fresh_part(earlier: str, text: str, policy: LoopPolicy = DEFAULT_LOOP_POLICY) -> str:
    """What ``text``, written to continue ``earlier``, adds to it.

    A continuation often opens by restating what it continues, then goes on: sentences
    at its start that restate ``earlier`` (half of their four-word runs occur there) are
    skipped, and from the first new sentence the text is kept up to its next repeat of
    ``earlier`` (see :func:`echo_start`), in complete sentences. Empty when nothing in
    ``text`` is new.
    """
    rest = text[restated_end(set(_quads(earlier)), text) :]
    echo = echo_start(earlier, rest, policy)
    return complete_sentences(rest if echo is None else rest[:echo])


def unlooped(value: Any) -> Any:
    """A parsed JSON answer with repetition loops cut out of its strings (a string that
    loops keeps its sentences before the loop) and exact repeats dropped from lists (of
    strings or of objects: no list of an answer means the same item twice): small models
    loop inside JSON just as in prose."""
    if isinstance(value, str):
        start = loop_start(value)
        if start is None:
            return value
        kept = complete_sentences(value[:start]) or value[:start].strip()
        return kept or value
    if isinstance(value, list):
        items = [unlooped(item) for item in value]
        seen: set[str] = set()
        distinct = []
        for item in items:
            key = json.dumps(item, sort_keys=True, default=str)
            if key not in seen:
                seen.add(key)
                distinct.append(item)
        return distinct
    if isinstance(value, dict):
        return {key: unlooped(item) for key, item in value.items()}
    return value


def closed_prefixes(text: str, limit: int = 64) -> list[str]:
    """A JSON object cut off mid-answer, closed after each of its last complete members
    (the latest first, at most ``limit``).

    A model stopped by its token limit (often because it rambled inside one string) has
    usually written several complete list items first: dropping the partial item and
    closing the open arrays and objects lets what was complete still validate. The caller
    takes the first candidate that validates (a cut inside an item leaves it without its
    required fields; an earlier cut drops the item whole).
    """
    start = text.find("{")
    if start < 0:
        return []
    stack: list[str] = []
    in_string = escaped = False
    cuts: list[tuple[int, tuple[str, ...]]] = []
    for i in range(start, len(text)):
        c = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
            continue
        if c == '"':
            in_string = True
        elif c in "{[":
            stack.append("}" if c == "{" else "]")
        elif c in "}]":
            if not stack:
                return []
            stack.pop()
            if not stack:
                return [text[start : i + 1]]  # complete after all
            cuts.append((i + 1, tuple(stack)))
        elif c == ",":
            cuts.append((i, tuple(stack)))
    return [
        text[start:end].rstrip().rstrip(",") + "".join(reversed(open_))
        for end, open_ in reversed(cuts[-limit:])
    ]


class LoopGuard:
    """Watches a streamed answer and says when it has fallen into a loop.

    Checking on every chunk would cost a full scan each time; checking every
    ``every_chars`` new characters bounds the work while stopping a loop within a few
    sentences of its third repeat.
    """

    def __init__(
        self,
        policy: LoopPolicy = DEFAULT_LOOP_POLICY,
        every_chars: int = 400,
        *,
        prefix: str = "",
    ) -> None:
        self._policy = policy
        self._every = every_chars
        self._checked = 0
        # A continuation that falls back into the text it continues loops too; the
        # prefix does not change, so it is fingerprinted once, not on every check.
        self._prefix = f"{prefix.rstrip()}\n\n" if prefix.strip() else ""
        self._seen = _fingerprint(self._prefix, policy) if self._prefix else None
        self._known = set(_quads(self._prefix)) if self._prefix else set()

    def looping(self, text: str, *, final: bool = False) -> bool:
        """Whether ``text`` (everything streamed so far) loops, or repeats the prefix it
        continues."""
        if not final and len(text) - self._checked < self._every:
            return False
        self._checked = len(text)
        if self._seen is not None:
            # A continuation may retell its text before going on (the gateway keeps what
            # it adds), but not for longer than the text itself, and not after new text.
            start = restated_end(self._known, text)
            if start >= len(text) and len(text) > len(self._prefix):
                return True
            if _first_echo(self._seen, text[start:], self._policy) is not None:
                return True
            return loop_start(self._prefix + text[start:], self._policy) is not None
        return loop_start(self._prefix + text, self._policy) is not None


# --- prose shape ----------------------------------------------------------------------

_HEADING = re.compile(
    r"^\s*(?:#{1,6}\s+.*|\*\*[^*\n]{1,120}\*\*\s*|(?:chapter|chap\.)\s+[\w-]+\b[^\n]{0,120}"
    r"|第[\d一二三四五六七八九十百千]+[章回][^\n]{0,60})\s*$",
    re.IGNORECASE,
)
_CLOSING_NOTE = re.compile(
    r"\n\s*(?:-{3,}|\*{3,})?\s*(?:\(?note:|author'?s note|word count:|\[end of chapter)[^\n]*$"
    # A last paragraph about the text itself ("This chapter contains approximately 400
    # words and follows the beats...").
    r"|\n\s*(?:(?:this|the above) (?:chapter|draft|revision|rewrite|version)\s+(?:contains|"
    r"has approximately|is approximately|follows|adheres|showcases|introduces|meets|uses|"
    r"includes|captures|maintains)\b)[^\n]*$"
    # A scene break with nothing after it.
    r"|\n\s*(?:(?:\*\s*){3,}|-{3,})\s*$",
    re.IGNORECASE,
)
_SCENE_BREAK = re.compile(r"^\s*(?:(?:\*\s*){3,}|-{3,})\s*$")


_PREAMBLE = re.compile(
    r"^\s*(?:sure|certainly|of course|okay|ok|absolutely|here(?:'s| is| are)|"
    r"i'd be (?:happy|glad)|i would be (?:happy|glad)|below is)\b"
    r"(?:[^\n]{0,200}:|[^\n]{0,200}\b(?:chapter|draft|version|revision|rewrite)\b[^\n]{0,80})\s*$",
    re.IGNORECASE,
)


def strip_wrapping(text: str) -> str:
    """The prose without what models add around it against the instructions: a chatty
    first line ("Sure! Here's the revised chapter:"), heading lines (``# Chapter 1: The
    Key``, ``**The Key**``), a scene break before the first line or after the last, and
    closing notes (``Word count: 412``, "This chapter contains approximately...")."""
    lines = text.strip().splitlines()
    while len(lines) > 1 and (
        not lines[0].strip()
        or _HEADING.match(lines[0])
        or _PREAMBLE.match(lines[0])
        or _SCENE_BREAK.match(lines[0])
    ):
        lines.pop(0)
    body = "\n".join(lines).strip()
    while True:
        trimmed = _CLOSING_NOTE.sub("", body).rstrip()
        if trimmed == body:
            return body
        body = trimmed


def cut_at_paragraph(text: str, max_words: int) -> str:
    """``text`` cut at the last paragraph end (else sentence end) within ``max_words``."""
    if word_count(text) <= max_words:
        return text
    paragraphs = re.split(r"\n\s*\n", text)
    kept: list[str] = []
    total = 0
    for paragraph in paragraphs:
        words = word_count(paragraph)
        if total + words > max_words:
            break
        kept.append(paragraph)
        total += words
    if kept:
        return "\n\n".join(kept).strip()
    return complete_sentences(_first_words(paragraphs[0], max_words))


def complete_sentences(text: str) -> str:
    """``text`` without a trailing unfinished sentence (as a cut-off answer ends)."""
    stripped = text.rstrip()
    ends = [m.end() for m in re.finditer(rf"[{_ENDS}][{_CLOSERS}]*", stripped)]
    if not ends:
        return stripped
    return stripped[: ends[-1]].rstrip()


def _first_words(text: str, count: int) -> str:
    matches = list(_WORD.finditer(text))
    if len(matches) <= count:
        return text
    return text[: matches[count - 1].end()]


def is_cjk(text: str) -> bool:
    """Whether most letters of ``text`` are CJK ideographs or kana."""
    letters = [c for c in text if c.isalpha()]
    return bool(letters) and sum(1 for c in letters if _CJK.match(c)) * 2 > len(letters)
