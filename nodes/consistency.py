"""Deterministic consistency checks of a chapter draft against world memory.

The reviewer runs these checks on every draft before asking the model for its judgement;
each finding is handed to the model as input and is also merged, unconditionally, into the
verdict (:func:`with_findings`), so a model that overlooks one cannot make it disappear.

Every finding is a :class:`~nodes.schemas.ReviewIssue` of category ``consistency`` whose
``quote`` is a verbatim substring of the draft (the offending sentence, clipped to the
schema's 600 characters around the offending words when a sentence is longer).

Severities:

* ``major`` -- the draft states something the world forbids: a dead character acting or
  speaking, a fixed attribute contradicted, a character at two places at once. A major
  finding makes :func:`nodes.reviewer.decide` send the draft back for revision.
* ``minor`` -- the draft is probably wrong but might be deliberate: a name one or two
  letters from a canonical name (a typo, or a new person), a set-up long overdue (the
  writer does not own the plan). These lower the score but do not force a revision.

Memory and flashback markers. A sentence is *memory* -- exempt from the dead-character
check and from the two-places check -- when any of these holds:

* it lies in a *memory section*: a paragraph whose first words are a flashback header
  (``Flashback``, ``Memory:``, ``In the memory``) starts one that runs to the next scene
  break; a paragraph opening with a time shift (``Years ago``, ``Long ago``, ``Years
  earlier``, ``Once, long before``, ``Back then`` ...) is memory as a whole;
* it overlaps an italic span (``*...*`` or ``_..._``, the usual typography of memories);
* it contains a memory phrase: ``remembered``, ``recalled``, ``memory``, ``years ago``,
  ``long before``, ``back then``, ``in those days``, ``as a child``, ``had said``,
  ``used to``, ``dreamed`` and the like (see :data:`MEMORY_PHRASES`).

Markers are read in narration only: words inside quoted dialogue ("I remember," Tobin
said) mark nothing.

Besides, a dead character's own verb in the past perfect (``Tobin had walked``) is
narration of the past, not an action now, and so are the contents of quoted dialogue
(``"Tobin walked into the sea," Mara said`` reports; only the attribution acts).

Scene breaks are lines made only of ``*``, ``#``, ``~``, ``-``, ``=`` or ``§``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from memory.world.port import Entity, Fact, WorldMemory, WorldSnapshot
from nodes.common import slugify
from nodes.schemas import ChapterBeats, ReviewIssue, Verdict


def _wordset(text: str) -> frozenset[str]:
    """The whitespace-separated words of ``text`` (keeps long vocabularies readable)."""
    return frozenset(text.split())


QUOTE_LIMIT = 600
"""ReviewIssue's limit on ``quote``, ``problem`` and ``suggestion``."""

OVERDUE_GRACE = 3
"""A set-up is reported once the chapter is more than this many chapters past its due one."""

VERDICT_ISSUE_LIMIT = 20
"""The verdict schema's cap on issues; findings are always kept, model issues fill up."""

DEAD_STATUSES: frozenset[str] = frozenset(
    {"dead", "deceased", "killed", "destroyed", "slain", "murdered", "executed"}
)

MEMORY_PHRASES: tuple[str, ...] = (
    r"remember(?:ed|s|ing)?",
    r"recall(?:ed|s|ing)?",
    r"reminisc(?:ed|es|ing)",
    r"memor(?:y|ies)",
    r"years (?:ago|before|earlier)",
    r"long (?:ago|before)",
    r"once,? long",
    r"back then",
    r"in those days",
    r"as (?:a )?child(?:ren)?",
    r"had said",
    r"used to",
    r"dream(?:ed|t|s)?",
)
_MEMORY = re.compile(r"\b(?:" + "|".join(MEMORY_PHRASES) + r")\b", re.IGNORECASE)
_FLASHBACK_HEADER = re.compile(r"^[\W_]*(?:flashback|memory\s*:|in the memory)\b", re.IGNORECASE)
_TIME_SHIFT_OPENER = re.compile(
    r"^[\W_]*(?:years (?:ago|before|earlier)|long ago|long before|once,? long (?:ago|before)"
    r"|back then|in those days|when \w+ (?:was|were) (?:a )?(?:child|young)|as a child)\b",
    re.IGNORECASE,
)
_SCENE_BREAK = re.compile(r"[ \t]*[*#~\-=§•][ \t*#~\-=§•]*")
# Italic spans stay within a paragraph: single newlines may occur, blank lines may not.
_ITALIC = re.compile(
    r"(?<![*\w])\*(?=[^\s*])(?:[^*\n]|\n(?![ \t]*\n))*?(?<=[^\s*])\*(?![*\w])"
    r"|(?<![_\w])_(?=[^\s_])(?:[^_\n]|\n(?![ \t]*\n))*?(?<=[^\s_])_(?![_\w])"
)

_TITLES: frozenset[str] = _wordset(
    """captain doctor dr lady lord sir mr mrs ms miss inspector detective father mother sister
    brother professor master dame commander sergeant old young the king queen prince princess
    aunt uncle saint st"""
)
_ABBREVIATIONS: frozenset[str] = _wordset(
    "mr mrs ms dr st mt capt col gen lt sgt prof rev jr sr vs etc"
)

# Verbs that introduce or report speech, for dialogue attribution either way round.
_SPEECH_VERBS: frozenset[str] = _wordset(
    """said says asked asks answered answers replied replies whispered whispers shouted shouts
    muttered mutters murmured murmurs called calls cried cries laughed laughs sighed sighs
    snapped snaps added adds told tells spoke speaks yelled yells screamed screams began
    continued insisted agreed warned explained demanded growled hissed breathed admitted
    offered pleaded promised repeated retorted conceded declared announced observed noted
    suggested echoed croaked rasped barked"""
)
# Irregular past (and a few present) forms of action verbs: lowercase words after a name
# that are verbs although they do not end in -ed.
_ACTION_VERBS: frozenset[str] = _wordset(
    """said spoke told went came took gave ran stood sat rose got put shook drew threw wrote
    read began brought bought caught fought struck swore wore woke won lit led hid bit fled
    slept wept crept knelt leapt sang swam drank ate saw held kept left made
    met found heard paid sent spent stole swung tore broke chose drove flew forgot forgave
    froze grew hung hurt let lost rode rang sold shot shut slid sprang stuck stung
    strode taught understood wound smiled grinned nodded turned walks runs goes comes says
    asks stands sits takes gives looks smiles nods turns laughs cries speaks tells waves
    reaches opens closes writes reads picks pulls pushes watches waits whispers shouts
    draws throws holds keeps leaves makes meets finds hears sees"""
)
# Verbs a dead body or a death can take without the dead acting, and stative verbs that
# describe a person rather than an act ("Tobin owed them", "Tobin loved the sea").
_DEATH_STATE_VERBS: frozenset[str] = _wordset(
    """died dies perished perishes passed drowned lay lies rested rests remained remains fell
    falls seemed seems bled was were is are had has did does would could should might must
    will can shall may lived owed owes owned owns belonged belongs loved loves hated hates
    liked likes wanted wants needed needs deserved deserves resembled resembles lacked lacks
    believed believes feared fears trusted trusts preferred prefers knew knows meant means
    thought thinks felt feels included excepted"""
)
# Participles that also describe what was done to the dead ("the war over, and Tobin
# buried"): they are the named one's act only with an object ("Tobin buried the knife").
_DEATH_PARTICIPLES: frozenset[str] = _wordset(
    """buried killed murdered slain drowned mourned cremated interred entombed executed
    hanged poisoned shot stabbed lost forgotten gone carried laid"""
)
_OBJECT_STARTS: frozenset[str] = _wordset(
    "the a an his her their its him them my our your this that these those every each one"
)
_PERFECT_INFINITIVE = re.compile(r"\s+to\s+(?:have|had)\s+[a-z]+")
_LOOK_DIRECTIONS: frozenset[str] = _wordset(
    "up down at away around round over back toward towards into out across past"
)
_CLAUSE_WORDS: frozenset[str] = _wordset(
    """and but then while as when before after until because so once where though although
    if yet or nor"""
)
_DEATH_AFTER_NAME = (
    r"(?:\s+\w+ly)?\s+(?:had\s+)?(?:died|dies|perished|was\s+killed|was\s+slain|was\s+murdered"
    r"|was\s+shot|was\s+stabbed|was\s+struck\s+down|fell\s+and\s+did\s+not\s+rise|fell\s+dead"
    r"|lay\s+dead|was\s+dead|stopped\s+breathing|breathed\s+(?:his|her|their|its)\s+last"
    r"|drew\s+(?:his|her|their|its)\s+last\s+breath)\b"
)
_DEATH_BEFORE_NAME = r"\b(?:killed|slew|murdered|shot|stabbed|strangled|poisoned|executed)\s+"

# Where a character is asserted to be: "<Name> was/stood ... in|at <Place>".
_PRESENCE_VERBS = (
    r"was|were|is|are|stood|stands|sat|sits|waited|waits|remained|remains|stayed|stays"
    r"|lingered|lingers|paced|paces|knelt|kneels|slept|sleeps|worked|works|hid|hides"
    r"|lived|lives|sheltered|camped|lodged|paused|pauses"
)
_PRESENCE_FILLER = (
    r"(?:\s+(?:still|already|now|there|here|alone|safely|quietly|back|together|again|too"
    r"|also|inside|waiting|once\s+more))*"
)
_PRESENCE_PREPOSITIONS = r"in|at|inside|within|aboard|on"
_TRAVEL = re.compile(
    r"\b(?:(?:walk(?:ed|s)?|went|go(?:es)?|came|comes?|return(?:ed|s)?|travell?(?:ed|s)?"
    r"|journey(?:ed|s)?|rode|rides?|sailed|sails?|flew|flies|drove|drives?|ran|runs?"
    r"|hurried|hurries|head(?:ed|s)?|moved?|moves|fled|flees|rushed|rushes|marched|marches"
    r"|wandered|wanders|crossed|crosses|climbed|climbs|stepped|steps|made\s+\w+\s+way"
    r"|makes\s+\w+\s+way|set(?:s)?\s+(?:out|off)|started|starts|followed|follows"
    r"|was\s+(?:taken|brought|carried|dragged)|were\s+(?:taken|brought|carried|dragged))"
    r"(?:\s+[\w'\u2019-]+){0,3}?\s+(?:to|into|toward|towards|for|back|home|across|through|over"
    r"|down|up|out|onto|from)\b"
    r"|arriv(?:ed|es|ing|al)|reach(?:ed|es|ing)|depart(?:ed|s|ing)|enter(?:ed|s|ing)"
    r"|board(?:ed|s|ing)|journey|travell?(?:ed|ing)|left\s+(?:[A-Z]|the\s|for\s|home\b)"
    r"|leaves\s+(?:[A-Z]|the\s|for\s|home\b)|set\s+out|set\s+off)",
)

# Colours and species for fixed attributes; each word maps to its group.
_EYE_GROUPS: dict[str, tuple[str, ...]] = {
    "grey": ("grey", "gray", "silver", "silvery", "slate", "steel"),
    "blue": ("blue", "azure", "sapphire", "cornflower", "sky-blue", "ice-blue"),
    "green": ("green", "emerald", "jade"),
    "brown": ("brown", "chestnut", "chocolate", "umber"),
    "hazel": ("hazel",),
    "amber": ("amber", "gold", "golden", "honey", "yellow"),
    "black": ("black", "ebony", "jet"),
    "violet": ("violet", "purple", "lilac", "lavender"),
    "white": ("white", "milky"),
}
_HAIR_GROUPS: dict[str, tuple[str, ...]] = {
    "black": ("black", "raven", "jet", "ebony"),
    "brown": ("brown", "brunette", "chestnut", "mousy", "mousey"),
    "blond": ("blond", "blonde", "golden", "gold", "fair", "flaxen", "yellow", "sandy", "straw"),
    "red": ("red", "ginger", "auburn", "copper", "russet", "titian"),
    "grey": ("grey", "gray", "silver", "silvery", "white", "snowy", "ashen"),
    "blue": ("blue",),
    "green": ("green",),
    "pink": ("pink",),
    "purple": ("purple", "violet", "lilac"),
}
_SPECIES_GROUPS: dict[str, tuple[str, ...]] = {
    "human": ("human", "mortal"),
    "elf": ("elf", "elven", "elvish"),
    "half-elf": ("half-elf", "half-elven"),
    "dwarf": ("dwarf", "dwarven", "dwarvish"),
    "orc": ("orc", "orcish", "half-orc"),
    "goblin": ("goblin",),
    "troll": ("troll",),
    "giant": ("giant",),
    "halfling": ("halfling", "hobbit"),
    "gnome": ("gnome",),
    "fae": ("fae", "faerie", "fairy", "fey", "sidhe"),
    "vampire": ("vampire",),
    "werewolf": ("werewolf", "lycanthrope"),
    "synthetic": ("synthetic", "android", "synth", "robot", "automaton"),
    "cyborg": ("cyborg",),
    "alien": ("alien",),
    "dragon": ("dragon",),
    "demon": ("demon",),
    "angel": ("angel",),
    "merfolk": ("mermaid", "merman", "merfolk"),
    "centaur": ("centaur",),
}
# Species that share a nature: a half-elf may be called an elf or a human, a cyborg a human.
_SPECIES_COMPATIBLE: dict[str, frozenset[str]] = {
    "half-elf": frozenset({"elf", "human"}),
    "elf": frozenset({"half-elf"}),
    "human": frozenset({"half-elf", "cyborg"}),
    "cyborg": frozenset({"human"}),
}

# Capitalised words that are ordinary English, never names, wherever they stand. Kept
# small: a word the draft also uses in lower case is recognised as ordinary anyway.
_COMMON_WORDS: frozenset[str] = _wordset(
    """a about above across after afterwards again against ah all almost alone along already
    also although always among an and another any anyone anything anyway anywhere are around
    as at away back be because been before behind being below beneath beside besides best
    better between beyond both but by can cannot come could dark dawn day days did do does
    done down during each early either else enough even evening ever every everyone
    everything everywhere far few fine first for from further get give go good got great had
    half has have he her here hers herself him himself his hold home how however i if in
    inside instead into is it its itself just keep kept last later least less let like
    little long look many may maybe me might mine more morning most much must my myself near
    nearly neither never next night no nobody none noon nor not nothing now nowhere of off
    often oh ok okay old on once one only onto or other others otherwise our ours ourselves
    out outside over perhaps please quite rain rather really right same say see she should
    since so some somebody someone something sometimes somewhere soon still stop such sure
    than thank thanks that the their theirs them themselves then there these they this those
    though three through thus till to today together tomorrow tonight too toward towards two
    under unless until up upon us very wait was we well were what whatever when whenever
    where wherever whether which while who whoever whole whom whose why will with within
    without would yes yesterday yet you your yours yourself yourselves above again ahead
    alas amen behold besides come enough farewell forgive goodbye hello hush listen look
    never nonetheless quick quiet run stay stand tell think wake watch welcome yes
    monday tuesday wednesday thursday friday saturday sunday january february march april
    june july august september october november december spring summer autumn winter god
    gods heaven hell chapter part book prologue epilogue north south east west"""
)


# --- text analysis ----------------------------------------------------------------------


@dataclass(frozen=True)
class Sentence:
    """One sentence of a draft: ``text == draft[start:end]`` (no surrounding whitespace).

    ``masked`` is the same span with the contents of quoted dialogue blanked out (quote
    marks kept), so narration can be read without what characters merely say.
    """

    index: int
    start: int
    end: int
    text: str
    masked: str
    paragraph: int
    scene: int
    memory: bool


@dataclass(frozen=True)
class _Span:
    start: int
    end: int


def _paragraph_spans(draft: str) -> list[tuple[_Span, bool]]:
    """Paragraph spans in order, each flagged when a scene break precedes it.

    Blank lines and scene-break lines end a paragraph; other line breaks do not.
    """
    spans: list[tuple[_Span, bool]] = []
    start: int | None = None
    end = 0
    opens_scene = False
    pending_break = False
    offset = 0
    for line in draft.split("\n"):
        line_start = offset
        offset += len(line) + 1
        is_break = bool(line.strip()) and _SCENE_BREAK.fullmatch(line) is not None
        if is_break or not line.strip():
            if start is not None:
                spans.append((_Span(start, end), opens_scene))
                start = None
            pending_break = pending_break or is_break
            continue
        if start is None:
            start, opens_scene, pending_break = line_start, pending_break, False
        end = line_start + len(line)
    if start is not None:
        spans.append((_Span(start, end), opens_scene))
    return spans


def _quote_mask(text: str) -> list[bool]:
    """Per character of one paragraph: True inside quoted dialogue (not the marks)."""
    inside = [False] * len(text)
    open_at: int | None = None
    for i, ch in enumerate(text):
        if ch == "\u201c" or (ch == '"' and open_at is None):
            open_at = i
        elif ch in ('"', "\u201d") and open_at is not None:
            for j in range(open_at + 1, i):
                inside[j] = True
            open_at = None
    if open_at is not None:
        # An unclosed quote runs to the end of its paragraph (the usual convention when
        # one speaker's words span paragraphs).
        for j in range(open_at + 1, len(text)):
            inside[j] = True
    return inside


_TERMINATORS = ".!?\u2026"
_CLOSERS = "\"'\u201d\u2019)]*_"


def _sentence_bounds(text: str, inside: list[bool]) -> list[tuple[int, int]]:
    """(start, end) of each sentence in one paragraph; ends are after closing marks."""
    bounds: list[tuple[int, int]] = []
    start = 0
    i = 0
    n = len(text)
    while i < n:
        if text[i] not in _TERMINATORS:
            i += 1
            continue
        j = i
        while j < n and text[j] in _TERMINATORS:
            j += 1
        closed_quote = False
        while j < n and text[j] in _CLOSERS:
            closed_quote = closed_quote or text[j] in '"\u201d'
            j += 1
        if inside[i] and not closed_quote:
            # Inside dialogue a full stop ends a spoken sentence, not the narrated one.
            i = j
            continue
        if j < n and not text[j].isspace():
            i = j
            continue
        rest = text[j:].lstrip()
        previous_word = re.search(r"([A-Za-z]+)$", text[start:i])
        if text[i] == "." and previous_word is not None:
            word = previous_word.group(1)
            if word.lower() in _ABBREVIATIONS or (len(word) == 1 and word.isupper()):
                i = j
                continue
        if (rest and rest[0].islower()) or (closed_quote and _is_attribution_start(rest)):
            i = j
            continue
        bounds.append((start, j))
        start = j
        i = j
    if start < n:
        bounds.append((start, n))
    return bounds


def _is_attribution_start(rest: str) -> bool:
    """True when ``rest`` continues a quotation with its speaker ("Tobin said ...")."""
    words = re.findall(r"[A-Za-z'\u2019-]+", rest[:80])
    if not words:
        return False
    if words[0].lower() in _SPEECH_VERBS:
        return True
    return len(words) >= 2 and words[0][0].isupper() and words[1].lower() in _SPEECH_VERBS


@dataclass(frozen=True)
class _Analysis:
    sentences: tuple[Sentence, ...]


@lru_cache(maxsize=32)
def _analyse(draft: str) -> _Analysis:
    """Split a draft into sentences with scene, paragraph and memory marks (cached)."""
    italics = [_Span(m.start(), m.end()) for m in _ITALIC.finditer(draft)]
    sentences: list[Sentence] = []
    scene = 0
    memory_scene = False
    for number, (span, after_break) in enumerate(_paragraph_spans(draft)):
        if after_break:
            scene += 1
            memory_scene = False
        text = draft[span.start : span.end]
        inside = _quote_mask(text)
        masked_text = "".join(" " if q else ch for ch, q in zip(text, inside, strict=True))
        # Markers count in narration only: a character saying "I remember" is not a memory.
        if _FLASHBACK_HEADER.match(masked_text):
            memory_scene = True
        memory_paragraph = memory_scene or bool(_TIME_SHIFT_OPENER.match(masked_text))
        for start, end in _sentence_bounds(text, inside):
            raw = text[start:end]
            lead = len(raw) - len(raw.lstrip())
            trail = len(raw.rstrip())
            if trail <= lead:
                continue
            absolute = span.start + start + lead
            stop = span.start + start + trail
            sentence_text = draft[absolute:stop]
            if not any(ch.isalpha() for ch in sentence_text):
                continue
            masked = masked_text[start + lead : start + trail]
            in_italics = any(s.start < stop and absolute < s.end for s in italics)
            sentences.append(
                Sentence(
                    index=len(sentences),
                    start=absolute,
                    end=stop,
                    text=sentence_text,
                    masked=masked,
                    paragraph=number,
                    scene=scene,
                    memory=memory_paragraph or in_italics or bool(_MEMORY.search(masked)),
                )
            )
    return _Analysis(tuple(sentences))


def split_sentences(draft: str) -> list[Sentence]:
    """The sentences of ``draft``, each a verbatim substring ``draft[start:end]``.

    Sentences end at ``. ! ? …`` followed by space (closing quotes and brackets kept with
    the sentence), never inside quoted dialogue, after a common abbreviation or initial,
    or before a lower-case word or a speaker ("Wait!" Tobin said); paragraphs and scene
    breaks always end one.
    """
    return list(_analyse(draft).sentences)


def _clip(sentence: Sentence, focus_start: int = 0, focus_end: int = 0) -> str:
    """The sentence, or a verbatim window of it around the focus when it is too long."""
    text = sentence.text
    if len(text) <= QUOTE_LIMIT:
        return text
    middle = (focus_start + focus_end) // 2
    begin = max(0, min(middle - QUOTE_LIMIT // 2, len(text) - QUOTE_LIMIT))
    return text[begin : begin + QUOTE_LIMIT].strip()


def _limit(text: str) -> str:
    return text if len(text) <= QUOTE_LIMIT else text[: QUOTE_LIMIT - 1].rstrip() + "\u2026"


def _issue(severity: str, quote: str, problem: str, suggestion: str) -> ReviewIssue:
    return ReviewIssue.model_validate(
        {
            "severity": severity,
            "category": "consistency",
            "quote": quote,
            "problem": _limit(problem),
            "suggestion": _limit(suggestion),
        }
    )


# --- the world, as the checks need it -----------------------------------------------------


def _normal(text: str) -> str:
    return " ".join(text.split()).casefold()


def _form_pattern(forms: Iterable[str]) -> str:
    """A case-sensitive alternation of name forms, longest first, spaces flexible."""
    ordered = sorted(set(forms), key=lambda f: (-len(f), f))
    return "|".join(r"\s+".join(re.escape(part) for part in f.split()) for f in ordered)


@dataclass(frozen=True)
class _World:
    """Entities of a snapshot with the unambiguous forms by which text names them."""

    snapshot: WorldSnapshot
    forms: dict[str, tuple[str, ...]]
    """Entity key → its forms (name, aliases, bare name, a character's first/last name),
    without any form another entity claims as well."""
    known: frozenset[str]
    """Every name, alias, form and name token of every entity, case-folded."""

    @property
    def entities(self) -> tuple[Entity, ...]:
        """Entities in snapshot order."""
        return self.snapshot.entities

    def resolve(self, name: str, kinds: Sequence[str] = ()) -> str | None:
        """The key of the entity called ``name`` (key, name, alias or slug)."""
        wanted = _normal(re.sub(r"^(?:the|a|an)\s+", "", name.strip(), flags=re.IGNORECASE))
        slug = slugify(name)
        for entity in self.entities:
            if kinds and entity.kind not in kinds:
                continue
            names = {_normal(entity.name), *(_normal(a) for a in entity.aliases)}
            names |= {_normal(f) for f in self.forms.get(entity.key, ())}
            if entity.key in (name, slug) or wanted in names or _normal(name) in names:
                return entity.key
        return None


def _derived_forms(entity: Entity) -> tuple[set[str], set[str]]:
    """(full forms, derived forms) of one entity."""
    full = {entity.name.strip(), *(a.strip() for a in entity.aliases if a.strip())}
    derived: set[str] = set()
    for name in list(full):
        bare = re.sub(r"^(?:the|a|an)\s+", "", name, flags=re.IGNORECASE)
        if bare != name and bare:
            derived.add(bare)
        if entity.kind == "character":
            tokens = [t for t in bare.split() if t.lower().strip(".") not in _TITLES]
            if len(bare.split()) > 1 and tokens:
                derived.update(t for t in (tokens[0], tokens[-1]) if len(t) >= 3)
    return {f for f in full if f}, derived - full


def _world(snapshot: WorldSnapshot) -> _World:
    """Index a snapshot: unambiguous name forms per entity and every known name."""
    full_owners: dict[str, set[str]] = {}
    derived_owners: dict[str, set[str]] = {}
    per_entity: dict[str, tuple[set[str], set[str]]] = {}
    known: set[str] = set()
    for entity in snapshot.entities:
        full, derived = _derived_forms(entity)
        per_entity[entity.key] = (full, derived)
        for form in full:
            full_owners.setdefault(_normal(form), set()).add(entity.key)
        for form in derived:
            derived_owners.setdefault(_normal(form), set()).add(entity.key)
        for form in full | derived:
            known.add(_normal(form))
            known.update(_normal(t) for t in form.split())
    forms: dict[str, tuple[str, ...]] = {}
    for key, (full, derived) in per_entity.items():
        mine: list[str] = []
        for form in full:
            if full_owners.get(_normal(form)) == {key}:
                mine.append(form)
        for form in derived:
            lowered = _normal(form)
            if lowered not in full_owners and derived_owners.get(lowered) == {key}:
                mine.append(form)
        forms[key] = tuple(sorted(set(mine), key=lambda f: (-len(f), f)))
    return _World(snapshot=snapshot, forms=forms, known=frozenset(known))


def _status_fact(snapshot: WorldSnapshot, key: str) -> Fact | None:
    """The currently valid ``status`` attribute fact of an entity, if any."""
    facts = [
        f
        for f in snapshot.facts
        if f.subject == key and f.predicate == "status" and f.value is not None
    ]
    return max(facts, key=lambda f: f.valid_from_chapter, default=None)


def _is_dead_status(value: str | None) -> bool:
    return (value or "").strip().lower() in DEAD_STATUSES


# --- check 1: the dead do not act ------------------------------------------------------------


@dataclass(frozen=True)
class _Act:
    start: int
    end: int
    words: str


def _actions(sentence: Sentence, forms: Sequence[str]) -> list[_Act]:
    """Where a character named by ``forms`` is the actor of ``sentence``."""
    if not forms:
        return []
    text = sentence.masked
    names = _form_pattern(forms)
    found: list[_Act] = []
    for match in re.finditer(rf"(?<![\w'\u2019-])(?:{names})(?![\w-])", text):
        before = text[: match.start()].rstrip()
        stripped = before.rstrip("\"'\u201c\u201d\u2018\u2019*_([ \t")
        opens_clause = (
            not stripped
            or before.endswith(tuple(",;:\u2014\u2013(\"'\u201c\u201d\u2018\u2019*_"))
            or before.endswith(" -")
            or (before.split()[-1].lower() in _CLAUSE_WORDS)
        )
        if not opens_clause:
            continue
        after = re.match(
            r"(?:\s+and\s+[A-Z][\w'\u2019-]*(?:\s+[A-Z][\w'\u2019-]*)?)?"
            r"(?:\s+(?P<adverb>[a-z]+ly))?\s+(?P<verb>[a-z]+)(?:\s+(?P<next>[A-Za-z]+))?",
            text[match.end() :],
        )
        if after is None or not _is_acting(after.group("verb"), after.group("next")):
            continue
        if _PERFECT_INFINITIVE.match(text, match.end() + after.end("verb")):
            # "Tobin claimed to have been there": a report of the earlier event.
            continue
        end = match.end() + after.end("verb")
        found.append(_Act(match.start(), end, text[match.start() : end]))
    for match in re.finditer(
        rf"[\"\u201d'\u2019]\s*(?P<verb>[a-z]+)\s+(?P<name>{names})(?![\w'\u2019-])", text
    ):
        if match.group("verb") in _SPEECH_VERBS:
            start = match.start("verb")
            found.append(_Act(start, match.end(), text[start : match.end()]))
    return found


def _is_acting(verb: str, following: str | None) -> bool:
    """True when ``verb`` (after a name) makes the named one act now."""
    if verb in _DEATH_PARTICIPLES:
        return following is not None and (
            following[0].isupper() or following.lower() in _OBJECT_STARTS
        )
    if verb in ("was", "were", "is", "are"):
        # Progressive forms act ("was walking"); states and passives do not.
        return bool(following and following.endswith("ing") and following != "dying")
    if verb in _DEATH_STATE_VERBS:
        return False
    if verb in ("looked", "looks", "glanced"):
        return following is None or following in _LOOK_DIRECTIONS or verb == "glanced"
    if verb in _SPEECH_VERBS or verb in _ACTION_VERBS:
        return True
    return len(verb) >= 4 and verb.endswith("ed")


def _death_index(sentences: Sequence[Sentence], forms: Sequence[str]) -> int | None:
    """Index of the first non-memory sentence narrating the death of the named one."""
    if not forms:
        return None
    names = _form_pattern(forms)
    pattern = re.compile(
        rf"(?<![\w'\u2019-])(?:{names})(?![\w'\u2019-]){_DEATH_AFTER_NAME}"
        rf"|{_DEATH_BEFORE_NAME}(?:{names})(?![\w-])"
    )
    for sentence in sentences:
        if not sentence.memory and pattern.search(sentence.masked):
            return sentence.index
    return None


def _death_events(world: _World, beats: ChapterBeats | None) -> set[str]:
    """Keys of the characters the beats plan to die in this chapter."""
    if beats is None:
        return set()
    keys: set[str] = set()
    for event in beats.events:
        if event.kind == "death":
            key = world.resolve(event.character, ("character",))
            if key is not None:
                keys.add(key)
    return keys


def dead_character_findings(
    draft: str, snapshot: WorldSnapshot, beats: ChapterBeats | None, chapter: int
) -> list[ReviewIssue]:
    """Check 1 (major): a dead character acts or speaks.

    Dead means a ``status`` in :data:`DEAD_STATUSES` valid at ``chapter``. A character
    dead since an earlier chapter may not act in any non-memory sentence. A character
    who dies in this chapter -- a ``death`` event in the beats, or a death recorded at
    this very chapter by an earlier version of it -- may act until the first sentence
    that narrates the death, not after it. Acting is being the subject, at the start of a
    clause, of an active verb ("Tobin walked", "Tobin and Ada waited", "Then Tobin
    laughed", "Tobin was walking") or a dialogue attribution ('"Go," Tobin said', '"Go,"
    said Tobin'). Not actions: mentions ("They buried Tobin", "Tobin's grave"), passives
    and states ("Tobin was buried", "Tobin lay still", "Tobin loved the sea", "Tobin
    owed them"), modals ("Tobin would have laughed"), a verb followed by a perfect
    infinitive ("Tobin claimed to have been there" reports the earlier claim), and
    anything in quoted dialogue or in a memory sentence (see the module docstring).
    """
    world = _world(snapshot)
    sentences = split_sentences(draft)
    dying = _death_events(world, beats)
    issues: list[ReviewIssue] = []
    for entity in world.entities:
        if entity.kind != "character":
            continue
        forms = world.forms.get(entity.key, ())
        status = _status_fact(snapshot, entity.key)
        dead_before = (
            status is not None
            and _is_dead_status(status.value)
            and status.valid_from_chapter < chapter
        )
        dies_now = entity.key in dying or (
            status is not None and _is_dead_status(status.value) and not dead_before
        )
        if not (dead_before or dies_now) or not forms:
            continue
        death_at: int | None = None
        if not dead_before:
            death_at = _death_index(sentences, forms)
            if death_at is None:
                continue
        for sentence in sentences:
            if sentence.memory or (death_at is not None and sentence.index <= death_at):
                continue
            for act in _actions(sentence, forms):
                if dead_before and status is not None:
                    since = (
                        f"world memory records {entity.name}'s status as "
                        f"{status.value!r} since chapter {status.valid_from_chapter}"
                    )
                else:
                    since = (
                        f"{entity.name} dies earlier in this chapter "
                        f"({sentences[death_at or 0].text[:120]!r})"
                    )
                issues.append(
                    _issue(
                        "major",
                        _clip(sentence, act.start, act.end),
                        f"{entity.name} is dead but acts here ({act.words!r}): {since}.",
                        f"Remove {entity.name}'s action or speech, give it to a living "
                        "character, or mark it clearly as a memory or flashback.",
                    )
                )
                break
    return issues


# --- check 2: one place at a time --------------------------------------------------------


@dataclass(frozen=True)
class _Presence:
    character: str
    location: str
    sentence: Sentence
    words: str


def _presences(world: _World, sentences: Sequence[Sentence]) -> list[_Presence]:
    """Every non-memory assertion that a known character is at a known location."""
    characters = {e.key for e in world.entities if e.kind == "character"}
    locations = {e.key for e in world.entities if e.kind == "location"}
    place_forms = {f: k for k in locations for f in world.forms.get(k, ())}
    person_forms = {f: k for k in characters for f in world.forms.get(k, ())}
    if not place_forms or not person_forms:
        return []
    people = _form_pattern(person_forms)
    places = _form_pattern(place_forms)
    person = rf"(?<![\w'\u2019-])(?:{people})(?![\w'\u2019-])"
    subject_then_place = re.compile(
        rf"(?P<subj>{person}(?:(?:\s*,\s*(?:and\s+)?|\s+and\s+){person})*)"
        rf"\s+(?:{_PRESENCE_VERBS}){_PRESENCE_FILLER}\s+(?:{_PRESENCE_PREPOSITIONS})"
        rf"\s+(?:the\s+)?(?P<loc>{places})(?![\w-])"
    )
    place_then_subject = re.compile(
        rf"^[^\w]*(?:In|At|Inside|Aboard|Within)\s+(?:the\s+)?(?P<loc>{places})(?![\w-]),?"
        rf"\s+(?P<subj>{person}(?:(?:\s*,\s*(?:and\s+)?|\s+and\s+){person})*)"
        rf"\s+(?P<verb>[a-z]+)"
    )
    lookup_place = {_normal(f): k for f, k in place_forms.items()}
    lookup_person = {_normal(f): k for f, k in person_forms.items()}
    found: list[_Presence] = []
    for sentence in sentences:
        if sentence.memory:
            continue
        matches = list(subject_then_place.finditer(sentence.masked))
        opening = place_then_subject.match(sentence.masked)
        if opening is not None and opening.group("verb") not in ("had", "would", "could"):
            matches.insert(0, opening)
        for match in matches:
            location = lookup_place.get(_normal(re.sub(r"^the\s+", "", match.group("loc"))))
            location = location or lookup_place.get(_normal(match.group("loc")))
            if location is None:
                continue
            for name in re.finditer(person, match.group("subj")):
                key = lookup_person.get(_normal(name.group(0)))
                if key is not None:
                    found.append(_Presence(key, location, sentence, match.group(0).strip()))
    return found


def _compatible(world: _World, a: str, b: str) -> bool:
    """Same place, one inside the other, or two places the world relates to each other."""
    if a == b:
        return True
    first, second = world.snapshot.entity(a), world.snapshot.entity(b)
    if first is not None and second is not None:
        x, y = _normal(first.name), _normal(second.name)
        if re.search(rf"\b{re.escape(x)}\b", y) or re.search(rf"\b{re.escape(y)}\b", x):
            return True
    return any(f.is_relationship and {f.subject, f.object} == {a, b} for f in world.snapshot.facts)


def _move_targets(world: _World, beats: ChapterBeats | None) -> dict[str, set[str]]:
    """Character key → keys of the places the beats explicitly move them to."""
    targets: dict[str, set[str]] = {}
    if beats is None:
        return targets
    for event in beats.events:
        if event.kind != "move":
            continue
        who = world.resolve(event.character, ("character",))
        where = world.resolve(event.target, ("location",)) if event.target else None
        if who is not None and where is not None:
            targets.setdefault(who, set()).add(where)
    return targets


def two_places_findings(
    draft: str, snapshot: WorldSnapshot, beats: ChapterBeats | None, chapter: int
) -> list[ReviewIssue]:
    """Check 2 (major): a character asserted at two known locations in one scene.

    An assertion is "<Name> was/stood/sat/waited ... in|at|inside <Place>" or a sentence
    opening "At <Place>, <Name> <verb>" (names and places by their world names and
    aliases; dialogue and memory sentences do not count). Two assertions of one
    character at different places are fine when a scene break separates them, when one
    place lies in the other (by name or by any world relationship between them), when
    the text from the first assertion's sentence to the second's narrates travel
    ("walked to", "arrived", "set out for", "reached", "left <Place>" ...), or when the
    beats carry a ``move`` event for the character to one of the two places.
    """
    del chapter  # presence is read from the text and the world as it stands
    world = _world(snapshot)
    sentences = split_sentences(draft)
    moves = _move_targets(world, beats)
    names = {e.key: e.name for e in world.entities}
    issues: list[ReviewIssue] = []
    last: dict[str, _Presence] = {}
    for presence in _presences(world, sentences):
        previous = last.get(presence.character)
        last[presence.character] = presence
        if previous is None or previous.sentence.scene != presence.sentence.scene:
            continue
        if _compatible(world, previous.location, presence.location):
            continue
        if moves.get(presence.character, set()) & {previous.location, presence.location}:
            continue
        between = draft[previous.sentence.start : presence.sentence.end]
        if _TRAVEL.search(between):
            continue
        who = names[presence.character]
        here, there = names[previous.location], names[presence.location]
        issues.append(
            _issue(
                "major",
                _clip(presence.sentence),
                f"{who} is placed at {there} here ({presence.words!r}) but was at {here} "
                f"earlier in the same scene ({previous.words!r}), with no travel narrated "
                f"and no move event in the beats.",
                f"Narrate {who}'s journey from {here} to {there}, add a scene break, or "
                "keep the scene in one place.",
            )
        )
    return issues


# --- check 3: near-miss names -------------------------------------------------------------


def damerau_levenshtein(a: str, b: str) -> int:
    """Edit distance counting insertions, deletions, substitutions and adjacent swaps
    (optimal string alignment)."""
    rows = [list(range(len(b) + 1))]
    for i in range(1, len(a) + 1):
        row = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            row[j] = min(rows[i - 1][j] + 1, row[j - 1] + 1, rows[i - 1][j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                row[j] = min(row[j], rows[i - 2][j - 2] + 1)
        rows.append(row)
    return rows[-1][-1]


def near_miss_threshold(form: str) -> int:
    """Largest distance still a near miss of ``form``: 1 up to 6 letters, else 2."""
    return 1 if len(form) <= 6 else 2


_CAPITALISED = re.compile(r"[A-Z][a-z]+(?:[-][A-Za-z]+)*(?:['\u2019][a-z]*)?")


def _capitalised_runs(sentence: Sentence) -> list[list[tuple[str, int, int]]]:
    """Runs of capitalised words separated by single spaces, as (word, start, end).

    A possessive is stripped and ends its run; common words and contractions break runs.
    """
    runs: list[list[tuple[str, int, int]]] = []
    current: list[tuple[str, int, int]] = []
    last_end = -1
    text = sentence.text
    for match in _CAPITALISED.finditer(text):
        raw = match.group(0)
        word = re.sub(r"['\u2019]s?$", "", raw)
        contraction = re.search(r"['\u2019](?!s?$)", raw) is not None
        glued = match.start() > 0 and text[match.start() - 1].isalpha()
        if contraction or glued or word.lower() in _COMMON_WORDS:
            if current:
                runs.append(current)
            current, last_end = [], -1
            continue
        if current and text[last_end : match.start()] != " ":
            runs.append(current)
            current = []
        current.append((word, match.start(), match.start() + len(word)))
        last_end = match.end()
        if word != raw:
            runs.append(current)
            current, last_end = [], -1
    if current:
        runs.append(current)
    return runs


def near_miss_name_findings(
    draft: str, snapshot: WorldSnapshot, beats: ChapterBeats | None, chapter: int
) -> list[ReviewIssue]:
    """Check 3 (minor): a capitalised name one or two edits away from a canonical one.

    Candidates are runs of capitalised words (a possessive ``'s`` stripped) compared
    with entity names, aliases and a character's first and last names of the same word
    count, by Damerau-Levenshtein distance: at most 1 for forms of up to six letters, 2
    for longer ones; forms under five letters must also share the first letter, and
    candidates are at least three letters long. Not reported: exact names, aliases or
    tokens of any entity; plurals of them ("the Quills"); common English words (a small
    stop list); words the draft also uses in lower case (so sentence-initial ordinary
    words pass); contractions. One finding per sentence and entity, the closest form.
    """
    del beats, chapter  # names are compared with the whole world as it stands
    world = _world(snapshot)
    text_lower = set(re.findall(r"\b[a-z][a-z'-]*\b", draft))
    comparisons: list[tuple[str, str, int]] = []
    for entity in world.entities:
        for form in world.forms.get(entity.key, ()):
            comparisons.append((entity.key, form, len(form.split())))
    names = {e.key: e.name for e in world.entities}
    issues: list[ReviewIssue] = []
    for sentence in split_sentences(draft):
        reported: set[str] = set()
        candidates: list[tuple[str, int, int]] = []
        for run in _capitalised_runs(sentence):
            for size in (3, 2, 1):
                for i in range(len(run) - size + 1):
                    words = run[i : i + size]
                    candidates.append((" ".join(w for w, _, _ in words), words[0][1], words[-1][2]))
        for candidate, start, end in candidates:
            lowered = _normal(candidate)
            tokens = lowered.split()
            if lowered in world.known or all(t in world.known for t in tokens):
                continue
            if len(tokens) == 1 and (
                lowered in text_lower or len(lowered) < 3 or lowered in _COMMON_WORDS
            ):
                continue
            if any(lowered.endswith(s) and lowered[: -len(s)] in world.known for s in ("s", "es")):
                continue
            best: tuple[int, str, str] | None = None
            for key, form, size in comparisons:
                if size != len(tokens) or key in reported:
                    continue
                target = _normal(form)
                if len(target) < 5 and target[:1] != lowered[:1]:
                    continue
                distance = damerau_levenshtein(lowered, target)
                if 0 < distance <= near_miss_threshold(target) and (
                    best is None or (distance, form) < (best[0], best[2])
                ):
                    best = (distance, key, form)
            if best is None:
                continue
            distance, key, form = best
            reported.add(key)
            issues.append(
                _issue(
                    "minor",
                    _clip(sentence, start, end),
                    f"{candidate!r} is not a known name but is {distance} letter"
                    f"{'s' if distance > 1 else ''} away from {form!r}, the world's name "
                    f"for {names[key]}.",
                    f"Spell it {form!r} if {names[key]} is meant; if this is someone new, "
                    "choose a name that cannot be mistaken for an existing one.",
                )
            )
    return issues


# --- check 4: fixed attributes ---------------------------------------------------------


def _vocabulary(groups: dict[str, tuple[str, ...]]) -> dict[str, str]:
    return {word: group for group, words in groups.items() for word in words}


_EYES = _vocabulary(_EYE_GROUPS)
_HAIR = _vocabulary(_HAIR_GROUPS)
_SPECIES = _vocabulary(_SPECIES_GROUPS)


def _groups_in(text: str, vocabulary: dict[str, str]) -> list[tuple[str, str]]:
    """(word, group) of each vocabulary word in ``text``, in order, longest words first
    where they overlap, compounds split ("grey-green" gives grey and green)."""
    lowered = text.lower()
    taken: list[tuple[int, int, str]] = []
    for word in sorted(vocabulary, key=lambda w: (-len(w), w)):
        for match in re.finditer(rf"(?<![\w]){re.escape(word)}(?![\w])", lowered):
            if not any(match.start() < e and s < match.end() for s, e, _ in taken):
                taken.append((match.start(), match.end(), word))
    return [(word, vocabulary[word]) for _, _, word in sorted(taken)]


def _attribute_kind(name: str) -> str | None:
    """Which vocabulary a fixed attribute uses, from its name."""
    lowered = name.lower()
    if "eye" in lowered:
        return "eyes"
    if "hair" in lowered:
        return "hair"
    if lowered in ("species", "race", "kind", "ancestry", "species_kind"):
        return "species"
    return None


_ADJECTIVES = r"(?P<adj>(?:[A-Za-z-]+,?\s+){0,3}?)"


def _feature_patterns(forms: Sequence[str], noun: str) -> list[re.Pattern[str]]:
    """Patterns that give the named one's ``noun`` (eyes, hair) a description."""
    names = _form_pattern(forms)
    who = rf"(?<![\w'\u2019-])(?:{names})"
    having = {"eyes": "eyed", "hair": "haired"}[noun]
    return [
        re.compile(rf"{who}['\u2019]s\s+{_ADJECTIVES}{noun}\b"),
        re.compile(
            rf"{who}['\u2019]s\s+{noun}\s+(?:were|was|are|is|had\s+been|shone|gleamed|glinted"
            rf"|flashed|burned|blazed|looked|seemed|fell|hung|glowed)\s+"
            r"(?P<adj>(?:[A-Za-z-]+,?\s+){0,3}[A-Za-z-]+)"
        ),
        re.compile(rf"{who}(?![\w'\u2019-])\s+(?:had|has)\s+{_ADJECTIVES}{noun}\b"),
        re.compile(
            rf"(?P<adj>\b[A-Za-z]+(?:-[A-Za-z]+)?)-{having}\s+(?:[a-z]+\s+)?"
            rf"(?:{names})(?![\w-])"
        ),
    ]


# Species words often used figuratively ("a giant of a man", "she was an angel"): they
# count only in appositions ("the giant Ada", "Ada the giant"), not after "was a".
_FIGURATIVE_SPECIES: frozenset[str] = frozenset(
    {"giant", "angel", "demon", "dragon", "alien", "troll", "mortal", "robot", "machine"}
)
# "the dragon Ada rode." is a relative clause, not an apposition: a name followed by one
# verb and then the end of the clause or another verb.
_RELATIVE_CLAUSE = (
    r"(?!\s+[a-z]+(?:\s*(?:[.,;:!?]|$)|\s+(?:was|were|is|are|had|has|would|could|did)\b))"
)


def _species_patterns(forms: Sequence[str]) -> list[re.Pattern[str]]:
    """Patterns that call the named one a member of some species."""
    names = _form_pattern(forms)
    who = rf"(?<![\w'\u2019-])(?:{names})(?![\w'\u2019-])"
    ordered = sorted(_SPECIES, key=lambda w: (-len(w), w))
    every = "|".join(re.escape(w) for w in ordered)
    literal = "|".join(re.escape(w) for w in ordered if w not in _FIGURATIVE_SPECIES)
    species = rf"(?P<adj>{every})(?![\w'\u2019-])"
    literal_species = rf"(?P<adj>{literal})(?![\w'\u2019-])"
    return [
        re.compile(rf"\b[Tt]he\s+(?:[a-z]+\s+)?{species}\s+{who}{_RELATIVE_CLAUSE}"),
        re.compile(rf"\b(?:[Aa]n?|[Tt]he)\s+{species}\s+(?:named|called)\s+{who}"),
        re.compile(rf"{who}\s+the\s+{species}"),
        re.compile(rf"{who},\s+(?:an?|the)\s+(?:[a-z]+\s+)?{literal_species}"),
        re.compile(
            rf"{who}\s+(?:was|is|had\s+been)\s+(?:an?|the)\s+(?:[a-z]+\s+)?{literal_species}"
        ),
    ]


def fixed_attribute_findings(
    draft: str, snapshot: WorldSnapshot, beats: ChapterBeats | None, chapter: int
) -> list[ReviewIssue]:
    """Check 4 (major): the draft contradicts a fixed attribute of an entity.

    Covers fixed eye colour (``eye_colour``/``eye_color``/``eyes``), hair colour and
    species (``species``/``race``). Eyes and hair: "Ada's green eyes", "Ada's eyes were
    green", "Ada had green eyes", "the green-eyed Ada" against the colour groups of
    :data:`_EYE_GROUPS` / :data:`_HAIR_GROUPS` (grey = gray = silver; vague words such
    as "dark" never contradict; a compound like "grey-green" allows both). Species: "the
    elf Ada", "Ada, an elf", "Ada was an elf", "Ada the elf" against
    :data:`_SPECIES_GROUPS` (a half-elf may be called elf or human). Only *fixed*
    attributes are checked: mutable ones (dyed hair) may change, and fixed values outside
    the vocabulary are not judged.
    """
    del beats, chapter  # fixed attributes hold in every chapter
    world = _world(snapshot)
    sentences = split_sentences(draft)
    issues: list[ReviewIssue] = []
    for entity in world.entities:
        forms = world.forms.get(entity.key, ())
        if not forms:
            continue
        for attribute, value in sorted(entity.fixed.items()):
            kind = _attribute_kind(attribute)
            if kind is None:
                continue
            vocabulary = {"eyes": _EYES, "hair": _HAIR, "species": _SPECIES}[kind]
            fixed_groups = {g for _, g in _groups_in(value, vocabulary)}
            if not fixed_groups:
                continue
            allowed = set(fixed_groups)
            if kind == "species":
                for group in fixed_groups:
                    allowed |= _SPECIES_COMPATIBLE.get(group, frozenset())
                patterns = _species_patterns(forms)
            else:
                patterns = _feature_patterns(forms, kind)
            for sentence in sentences:
                contradiction: tuple[str, re.Match[str]] | None = None
                for pattern in patterns:
                    for match in pattern.finditer(sentence.text):
                        words = _groups_in(match.group("adj"), vocabulary)
                        if words and not {g for _, g in words} & allowed:
                            contradiction = (words[0][0], match)
                            break
                    if contradiction:
                        break
                if contradiction is None:
                    continue
                word, match = contradiction
                label = {"eyes": "eye colour", "hair": "hair colour", "species": "species"}[kind]
                issues.append(
                    _issue(
                        "major",
                        _clip(sentence, match.start(), match.end()),
                        f"{entity.name}'s {label} is fixed in world memory as {value!r} "
                        f"({attribute}), but the draft says {word!r} "
                        f"({match.group(0).strip()!r}).",
                        f"Describe {entity.name} as {value} ({label}), as established.",
                    )
                )
    return issues


# --- check 5: overdue set-ups ------------------------------------------------------------


def overdue_setup_findings(
    draft: str, snapshot: WorldSnapshot, beats: ChapterBeats | None, chapter: int
) -> list[ReviewIssue]:
    """Check 5 (minor): an open set-up more than three chapters past its due chapter.

    Reported when ``due_chapter < chapter - 3`` (overdue by 4 or more; by exactly 3 is
    still tolerated), the set-up is not paid off in world memory and the beats do not pay
    it off. An omission cannot be quoted, so the quote is the first sentence naming one
    of the set-up's entities, else the draft's first sentence; the problem says which. An
    empty draft (nothing to quote) gets no finding.
    """
    world = _world(snapshot)
    sentences = split_sentences(draft)
    if not sentences:
        return []
    paying = {slugify(k) for k in (beats.payoff if beats is not None else [])}
    names = {e.key: e.name for e in world.entities}
    issues: list[ReviewIssue] = []
    for setup in sorted(snapshot.open_setups(), key=lambda s: (s.due_chapter, s.key)):
        if setup.due_chapter >= chapter - OVERDUE_GRACE or slugify(setup.key) in paying:
            continue
        forms = [f for key in setup.entities for f in world.forms.get(key, ())]
        anchor: Sentence | None = None
        if forms:
            pattern = re.compile(rf"(?<![\w-])(?:{_form_pattern(forms)})(?![\w-])")
            anchor = next((s for s in sentences if pattern.search(s.text)), None)
        if anchor is not None:
            where = "the quote is the first sentence naming one of its entities"
        else:
            anchor = sentences[0]
            where = "the quote is the draft's first sentence, since nothing here names it"
        involved = ", ".join(names.get(k, k) for k in setup.entities) or "no entity"
        issues.append(
            _issue(
                "minor",
                _clip(anchor),
                f"Set-up {setup.key!r} ({setup.description.rstrip('.')}; involving "
                f"{involved}) was planted in chapter {setup.planted_chapter} and due in "
                f"chapter {setup.due_chapter}, and is still open in chapter {chapter}, "
                f"{chapter - setup.due_chapter} chapters late; {where}.",
                "Pay the set-up off in this chapter (and list it in the beats' payoff), "
                "or have the director re-plan its due chapter.",
            )
        )
    return issues


# --- all checks --------------------------------------------------------------------------

CHECKS = (
    dead_character_findings,
    two_places_findings,
    fixed_attribute_findings,
    near_miss_name_findings,
    overdue_setup_findings,
)
"""Every check, in reporting order among findings at the same place and severity."""


def check_draft(
    draft: str, snapshot: WorldSnapshot, beats: ChapterBeats | None, chapter: int
) -> list[ReviewIssue]:
    """Every finding of every check: majors first, then by position in the draft, then
    by check; duplicates (same quote and problem) removed."""
    ranked: dict[tuple[str, str], tuple[tuple[int, int, int, str], ReviewIssue]] = {}
    for order, check in enumerate(CHECKS):
        for issue in check(draft, snapshot, beats, chapter):
            key = (issue.quote, issue.problem)
            rank = (issue.severity != "major", draft.find(issue.quote), order, issue.problem)
            if key not in ranked or rank < ranked[key][0]:
                ranked[key] = (rank, issue)
    return [issue for _, issue in sorted(ranked.values(), key=lambda item: item[0])]


async def consistency_findings(
    world: WorldMemory, novel_id: str, chapter: int, beats: ChapterBeats | None, draft: str
) -> list[ReviewIssue]:
    """Check ``draft`` of ``chapter`` against the world as of that chapter."""
    snapshot = await world.world_as_of(novel_id, chapter)
    return check_draft(draft, snapshot, beats, chapter)


def merge_issues(
    findings: Sequence[ReviewIssue], issues: Sequence[ReviewIssue]
) -> list[ReviewIssue]:
    """Findings first, verbatim, then the model's issues that do not restate one.

    A model issue restates a finding when it is a consistency issue quoting the same
    text. Model issues fill the list up to :data:`VERDICT_ISSUE_LIMIT`; findings are
    never dropped, even beyond it.
    """
    merged: list[ReviewIssue] = []
    seen: set[tuple[str, str, str, str]] = set()
    for finding in findings:
        key = (finding.severity, finding.category, finding.quote, finding.problem)
        if key not in seen:
            seen.add(key)
            merged.append(finding)
    quoted = {f.quote.strip() for f in findings}
    room = max(0, VERDICT_ISSUE_LIMIT - len(merged))
    extra = [
        issue
        for issue in issues
        if not (issue.category == "consistency" and issue.quote.strip() in quoted)
    ]
    return merged + extra[:room]


def with_findings(verdict: Verdict, findings: Sequence[ReviewIssue]) -> Verdict:
    """The verdict with every finding merged into its issues (see :func:`merge_issues`)."""
    if not findings:
        return verdict
    return verdict.model_copy(update={"issues": merge_issues(findings, verdict.issues)})
