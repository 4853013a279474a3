"""Counting and cutting text in any language.

Writers count words in scripts that separate them with spaces and characters in Chinese,
Japanese and Korean, which do not. Everything that measures or splits prose (chapter
lengths, retrieval passages, repetition shingles, offline embeddings) uses these units,
so a novel in Chinese is measured as its readers would measure it.
"""

from __future__ import annotations

import re
import unicodedata

CJK_RANGES = (
    "\u3040-\u30ff"  # hiragana, katakana
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # CJK ideographs
    "\uac00-\ud7af"  # hangul syllables
)
"""Character ranges of scripts written without spaces between words."""

_LETTER = rf"[^\W_{CJK_RANGES}]"
_UNIT = re.compile(rf"[{CJK_RANGES}]|{_LETTER}+(?:['\u2019-]{_LETTER}+)*")
_CJK_CHAR = re.compile(rf"[{CJK_RANGES}]")

SENTENCE_ENDS = ".!?\u2026\u3002\uff01\uff1f"
"""Full stops, question and exclamation marks, the ellipsis, and their CJK forms."""


def text_units(text: str) -> list[str]:
    """The counting units of ``text``, case-folded: one per word in space-separated
    scripts (a hyphenated word or a contraction is one), one per CJK character."""
    return _UNIT.findall(unicodedata.normalize("NFKC", text).casefold())


def text_length(text: str) -> int:
    """Length as writers count it: words, plus characters of CJK text."""
    return len(text_units(text))


def is_cjk(text: str) -> bool:
    """True when most units of ``text`` are CJK characters."""
    units = text_units(text)
    return bool(units) and sum(1 for u in units if _CJK_CHAR.fullmatch(u)) * 2 > len(units)


def has_cjk(text: str) -> bool:
    """True when ``text`` contains any CJK character."""
    return _CJK_CHAR.search(text) is not None


def spaced_cjk(text: str) -> str:
    """``text`` with a space around every CJK character, so word-based tools see each
    character as a word (the usual unit of CJK retrieval)."""
    return _CJK_CHAR.sub(lambda m: f" {m.group(0)} ", text)
