"""Story integrity: deterministic rules that compare a draft's claims with the world.

The reviewer's model extracts :class:`~nodes.schemas.ChapterClaims` from a draft (who is
present and where, who travels, dies, is renamed, holds or receives an item, learns or
refers to a secret, which traits and time markers are stated, which set-ups are paid).
The rules here compare those claims with the world as it stood before the chapter and
return :class:`Finding` s, each quoting the draft verbatim. Nothing here reads English
words: names, places, items, secrets and set-ups are matched through world memory, so
the checks work for a novel in any language. Prose heuristics for English stay in
:mod:`nodes.consistency` as an extra signal.

The eight kinds of contradiction (``FindingKind``):

* ``life`` -- a dead character present, acting, travelling, learning or holding
  something now (memories, flashbacks and reports are exempt);
* ``location`` -- a character at two places in one scene, or at another place than the
  world (or an earlier scene) put them, with no travel and no time passing in between;
* ``name`` -- a character called by a name one or two letters from a known one, or by a
  known first name with another surname, without an explicit rename;
* ``attribute`` -- a stated trait that differs from a fixed one with no cause stated
  (a stated cause makes it a change, recorded as one);
* ``knowledge`` -- a character referring to a secret they have not learned (by the world,
  or earlier in the chapter);
* ``custody`` -- a character using an item another one holds, with no hand-over first;
* ``time`` -- a day earlier than the story's present, an age that does not fit the
  character's birth day, an event dated differently from the world's record or not yet
  happened;
* ``setup`` -- a set-up paid before it was planted, or due (or promised by the beats) and
  not shown by the draft.

Besides, ``repetition`` (a passage repeated within the chapter or from an earlier one) and
``length`` (far from the target) come from the text itself (:func:`text_findings`).

Story time is counted in days on one scale: the world's ``story-time`` entity carries
the current ``day``, events carry a fixed ``day``, characters a fixed ``born_day``.

An author may accept a contradiction as deliberate (a character thought dead returns, eyes
that change). A finding carries the world facts that make the draft's version the truth
from its chapter (:attr:`Finding.change`); accepting it records them
(:func:`accepted_changes`), so later chapters are checked against the new facts.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from errors import InvalidInput
from memory.text import SENTENCE_ENDS, is_cjk, text_length, text_units
from memory.world.port import Entity, FactSpec, Setup, WorldSnapshot
from nodes import world_view
from nodes.common import slugify
from nodes.consistency import (
    DEAD_STATUSES,
    damerau_levenshtein,
    dead_character_findings,
    fixed_attribute_findings,
    near_miss_name_findings,
    near_miss_threshold,
    two_places_findings,
)
from nodes.schemas import (
    AttributeClaim,
    ChapterBeats,
    ChapterClaims,
    DeathClaim,
    ItemClaim,
    KnowledgeClaim,
    PayoffClaim,
    PlantClaim,
    PresenceClaim,
    RenameClaim,
    ReviewIssue,
    TimeClaim,
    TravelClaim,
)

FindingKind = Literal[
    "life",
    "location",
    "name",
    "attribute",
    "knowledge",
    "custody",
    "time",
    "setup",
    "repetition",
    "length",
]
FINDING_KINDS: tuple[str, ...] = get_args(FindingKind)
CONTRADICTION_KINDS: tuple[str, ...] = FINDING_KINDS[:8]
"""The kinds a world fact can contradict (the rest come from the text alone)."""

Severity = Literal["major", "minor"]

AUTHOR_CAUSE = "the author accepted this change as deliberate"
"""The cause recorded with a fixed attribute an author lets a chapter change."""

TIMELINE_KEY = world_view.TIMELINE_KEY
"""The world entity whose ``day`` attribute is the story's present, in days."""
DAY = "day"
BORN_DAY = "born_day"
UNIT_DAYS: dict[str, float] = {"day": 1.0, "week": 7.0, "month": 30.44, "year": 365.25}
QUOTE_LIMIT = 600
"""ReviewIssue's limit on ``quote``, ``problem`` and ``suggestion``."""
LOCATION_PREDICATE = "located_in"
PART_OF = ("located_in", "part_of")
HOLDER_PREDICATE = "held_by"
KNOWS_PREDICATE = "knows"
SHORT_RATIO = 0.5
"""A draft shorter than this share of the target is far too short (major)."""
LONG_RATIO = 2.0
"""A draft longer than this multiple of the target is far too long (minor)."""
REPEAT_SHARE = 0.5
"""A paragraph is a repetition when this share of its shingles occurred before."""


@dataclass(frozen=True)
class Finding:
    """One contradiction or defect, quoting the draft verbatim."""

    kind: FindingKind
    severity: Severity
    quote: str
    problem: str
    suggestion: str
    change: tuple[FactSpec, ...] = ()
    """World facts, valid from the chapter, that make the draft's version the truth if
    the author accepts it as deliberate (empty: the world already follows the draft, or
    there is nothing to record, as for repetition and length)."""

    def issue(self) -> ReviewIssue:
        """The finding as a reviewer issue (category ``consistency``)."""
        return ReviewIssue(
            severity=self.severity,
            category="consistency",
            quote=self.quote,
            problem=_limit(f"[{self.kind}] {self.problem}"),
            suggestion=_limit(self.suggestion),
        )


def accepted_changes(findings: Sequence[Mapping[str, Any]] | None) -> tuple[FactSpec, ...]:
    """The world facts of the stored findings an author accepted as deliberate."""
    return tuple(
        FactSpec(**fact)
        for finding in findings or ()
        if finding.get("accepted")
        for fact in finding.get("change") or ()
    )


def numbered(findings: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """Stored findings as shown to authors: each with its ``number`` (from 1), by which
    an author accepts it."""
    return [{**dict(f), "number": n} for n, f in enumerate(findings or (), 1)]


def with_accepted(
    findings: Sequence[Mapping[str, Any]], numbers: Iterable[int], field: str = "accept"
) -> list[dict[str, Any]]:
    """Stored findings with those numbered ``numbers`` (from 1, in stored order) marked
    accepted; InvalidInput (on ``field``) names a number that is not one of them."""
    marked = [dict(f) for f in findings]
    for number in numbers:
        if not 1 <= number <= len(marked):
            raise InvalidInput(
                f"finding {number} does not exist: the chapter has "
                + (f"findings 1-{len(marked)}" if marked else "no findings"),
                field=field,
            )
        marked[number - 1]["accepted"] = True
    return marked


def is_chinese(language: str | None) -> bool:
    """Whether findings are written in Chinese for a book in ``language`` (English else)."""
    return bool(language) and str(language).split("-")[0].casefold() == "zh"


Said = tuple[str, str]
"""A finding's problem and suggestion."""


def _say(language: str | None, english: Said, chinese: Said) -> Said:
    """The finding's words in the book's language: Chinese or English."""
    return chinese if is_chinese(language) else english


_ZH_UNITS = {"day": "天", "week": "周", "month": "个月", "year": "年"}


def _limit(text: str) -> str:
    return text if len(text) <= QUOTE_LIMIT else text[: QUOTE_LIMIT - 1].rstrip() + "\u2026"


_STOP = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "and",
        "or",
        "to",
        "in",
        "on",
        "at",
        "with",
        "his",
        "her",
        "their",
        "its",
        "is",
        "was",
        "were",
        "be",
        "by",
        "for",
        "from",
        "as",
        "that",
        "this",
        "very",
    ]
)


def _content(text: str) -> set[str]:
    return {u for u in text_units(text) if u not in _STOP}


def _norm(text: str) -> str:
    return " ".join(text_units(text))


# --- where a claim stands in the draft ---------------------------------------------------

_SENTENCE = re.compile(
    rf"[^{SENTENCE_ENDS}\n]+(?:[{SENTENCE_ENDS}]+[\"'\u201d\u2019\u300d\u300f)]*)?"
)


def _sentences(draft: str) -> list[tuple[int, str]]:
    """(start, text) of each sentence, verbatim, stripped."""
    out: list[tuple[int, str]] = []
    for match in _SENTENCE.finditer(draft):
        text = match.group(0)
        stripped = text.strip()
        if stripped:
            out.append((match.start() + text.index(stripped[0]), stripped))
    return out


def _clip(text: str) -> str:
    return text if len(text) <= QUOTE_LIMIT else text[:QUOTE_LIMIT].rstrip()


def locate(draft: str, quote: str) -> tuple[int, str] | None:
    """Where ``quote`` stands in ``draft`` and the verbatim text there.

    Models copy quotes imperfectly, so after an exact match this tries the same words
    with any spacing and case, then the sentence sharing most of the quote's words (at
    least half of them). ``None`` when the quote is not in the draft at all.
    """
    quote = quote.strip()
    if not quote:
        return None
    at = draft.find(quote)
    if at >= 0:
        return at, _clip(quote)
    words = quote.split()
    pattern = r"\s+".join(re.escape(w) for w in words)
    match = re.search(pattern, draft, re.IGNORECASE)
    if match:
        return match.start(), _clip(match.group(0))
    wanted = _content(quote)
    if not wanted:
        return None
    best: tuple[float, int, str] | None = None
    for start, sentence in _sentences(draft):
        share = len(wanted & _content(sentence)) / len(wanted)
        if share >= 0.5 and (best is None or share > best[0]):
            best = (share, start, sentence)
    return (best[1], _clip(best[2])) if best else None


# --- the world, indexed for the rules ----------------------------------------------------


def _bare(name: str) -> str:
    return re.sub(r"^(?:the|a|an)\s+", "", name.strip(), flags=re.IGNORECASE)


@dataclass
class WorldIndex:
    """Entities of a snapshot by every form that names them, plus this chapter's renames."""

    snapshot: WorldSnapshot
    forms: dict[str, str] = field(default_factory=dict)
    """Normalised name form → entity key (forms shared by two entities are left out)."""
    entities: dict[str, Entity] = field(default_factory=dict)

    @classmethod
    def of(cls, snapshot: WorldSnapshot) -> WorldIndex:
        index = cls(snapshot, entities={e.key: e for e in snapshot.entities})
        owners: dict[str, set[str]] = {}
        for entity in snapshot.entities:
            for form in _forms(entity):
                owners.setdefault(form, set()).add(entity.key)
        index.forms = {form: next(iter(keys)) for form, keys in owners.items() if len(keys) == 1}
        return index

    def resolve(self, name: str | None, kinds: Sequence[str] = ()) -> str | None:
        """The key of the entity ``name`` names (key, name, alias, bare or partial form)."""
        if not name:
            return None
        for candidate in (name, _bare(name)):
            key = self.forms.get(_norm(candidate))
            if key is None and candidate.strip() in self.entities:
                key = candidate.strip()
            if key is None and slugify(candidate) in self.entities:
                key = slugify(candidate)
            if key is not None and (not kinds or self.entities[key].kind in kinds):
                return key
        return None

    def add_form(self, form: str, key: str) -> None:
        """Name ``key`` by ``form`` from here on (a rename in the chapter)."""
        self.forms[_norm(form)] = key

    def name(self, key: str | None) -> str:
        """The display name of ``key``."""
        entity = self.entities.get(key or "")
        return entity.name if entity else (key or "somewhere unknown")

    def attribute(self, key: str, name: str) -> str | None:
        """The value of attribute ``name`` (fixed, or changed since) at the chapter."""
        wanted = attribute_key(name)
        for attribute, value in self.snapshot.attributes(key).items():
            if attribute_key(attribute) == wanted:
                return value
        return None

    def stored_name(self, key: str, name: str) -> str:
        """The name under which ``key`` keeps attribute ``name`` (a stated ``hair`` is the
        fixed ``hair_colour``), so a change replaces the value instead of sitting beside
        it under another name; ``name`` itself for an attribute not kept yet."""
        wanted = attribute_key(name)
        entity = self.entities.get(key)
        kept = [*(entity.fixed if entity else ()), *self.snapshot.attributes(key)]
        return next((a for a in kept if attribute_key(a) == wanted), name)

    def fixed(self, key: str, name: str) -> str | None:
        """The value of a fixed attribute ``name`` as it stands (caused changes applied),
        or ``None`` when the attribute is not a fixed one."""
        entity = self.entities.get(key)
        if entity is None:
            return None
        wanted = attribute_key(name)
        if not any(attribute_key(a) == wanted for a in entity.fixed):
            return None
        return self.attribute(key, name)

    def relation(self, subject: str, predicate: str) -> str | None:
        """The object of the subject's valid ``predicate`` relationship, if any."""
        return next(
            (
                f.object
                for f in self.snapshot.facts
                if f.subject == subject and f.predicate == predicate and f.object is not None
            ),
            None,
        )

    def related(self, subject: str, predicate: str, obj: str) -> bool:
        """True when the relationship ``subject -predicate-> obj`` holds."""
        return any(
            f.subject == subject and f.predicate == predicate and f.object == obj
            for f in self.snapshot.facts
        )

    def containers(self, place: str) -> set[str]:
        """The place and every place it lies in (up to five levels)."""
        seen = {place}
        frontier = [place]
        for _ in range(5):
            frontier = [
                f.object
                for f in self.snapshot.facts
                if f.subject in frontier and f.predicate in PART_OF and f.object is not None
            ]
            frontier = [p for p in frontier if p not in seen]
            seen.update(frontier)
        return seen

    def same_place(self, a: str, b: str) -> bool:
        """True when one place lies in (or is) the other."""
        return a in self.containers(b) or b in self.containers(a)

    def number(self, key: str, attribute: str) -> float | None:
        """The number an attribute of ``key`` holds (a day, say), if any."""
        value = self.attribute(key, attribute)
        if value is None:
            return None
        match = re.search(r"-?\d+(?:\.\d+)?", value)
        return float(match.group(0)) if match else None

    def day(self) -> float | None:
        """The story's present day, when the world keeps a timeline."""
        return self.number(TIMELINE_KEY, DAY)

    def secret(self, text: str) -> str | None:
        """The secret ``text`` names or states: by name, else the secret sharing most of
        its words (at least 60% of the shorter)."""
        key = self.resolve(text, ("secret",))
        if key is not None:
            return key
        wanted = _content(text)
        if not wanted:
            return None
        best: tuple[float, str] | None = None
        for entity in self.snapshot.entities:
            if entity.kind != "secret":
                continue
            known = _content(" ".join((entity.name, *entity.aliases, entity.description)))
            share = len(wanted & known) / max(1, min(len(wanted), len(known)))
            if share >= 0.6 and (best is None or share > best[0]):
                best = (share, entity.key)
        return best[1] if best else None

    def setup(self, text: str) -> Setup | None:
        """The set-up ``text`` names (its key) or describes (60% of the words shared)."""
        wanted = slugify(text)
        for setup in self.snapshot.setups:
            if setup.key in (text.strip(), wanted):
                return setup
        words = _content(text)
        best: tuple[float, Setup] | None = None
        for setup in self.snapshot.setups:
            known = _content(setup.description) | _content(setup.key.replace("-", " "))
            share = len(words & known) / max(1, min(len(words), len(known)))
            if words and share >= 0.6 and (best is None or share > best[0]):
                best = (share, setup)
        return best[1] if best else None


def _forms(entity: Entity) -> set[str]:
    names = [entity.name, *entity.aliases]
    forms = {_norm(entity.key)}
    for name in names:
        forms.add(_norm(name))
        forms.add(_norm(_bare(name)))
        if entity.kind == "character":
            words = _bare(name).split()
            if len(words) > 1:
                forms.update(_norm(w) for w in (words[0], words[-1]) if len(w) >= 3)
    forms.discard("")
    return forms


def attribute_key(name: str) -> str:
    """The comparable form of an attribute name: ``Eye_Colour``, ``eye color`` and
    ``eyes`` are one attribute, as are ``race`` and ``species``."""
    words = [w for w in re.split(r"[^a-z0-9]+", name.casefold()) if w]
    words = [w for w in words if w not in ("colour", "color", "colours", "colors", "the")]
    joined = "_".join(words) or name.casefold()
    joined = _ATTRIBUTE_SYNONYMS.get(joined, joined)
    return joined[:-1] if joined.endswith("s") and len(joined) > 3 else joined


_ATTRIBUTE_SYNONYMS = {
    "race": "species",
    "ancestry": "species",
    "eye": "eyes",
    "hair_shade": "hair",
    "birthday": "born_day",
    "birth_day": "born_day",
}

# Words for one colour or species count as one value ("grey" and "silver" eyes agree).
_GROUPS: tuple[tuple[str, ...], ...] = (
    ("grey", "gray", "silver", "silvery", "slate", "steel", "ashen"),
    ("blue", "azure", "sapphire", "cornflower"),
    ("green", "emerald", "jade"),
    ("brown", "chestnut", "chocolate", "umber", "brunette", "mousy"),
    ("hazel",),
    ("amber", "gold", "golden", "honey", "yellow", "blond", "blonde", "fair", "flaxen"),
    ("black", "ebony", "jet", "raven"),
    ("red", "ginger", "auburn", "copper", "russet"),
    ("violet", "purple", "lilac", "lavender"),
    ("white", "snowy", "milky"),
    ("elf", "elven", "elvish"),
    ("dwarf", "dwarven", "dwarvish"),
    ("human", "mortal"),
)
_GROUP_OF = {word: n for n, words in enumerate(_GROUPS) for word in words}
_VAGUE = frozenset(["dark", "light", "pale", "deep", "bright", "pure", "rich", "soft", "clear"])


def values_conflict(a: str, b: str) -> bool:
    """True when two values of one attribute cannot both hold.

    Numbers must be equal; colour and species words agree by group (a compound such as
    "grey-green" allows either); otherwise one value's words must contain the other's
    ("tall" and "very tall" agree, "left-handed" and "right-handed" do not).
    """
    na, nb = re.findall(r"\d+(?:\.\d+)?", a), re.findall(r"\d+(?:\.\d+)?", b)
    if na and nb:
        return {float(x) for x in na}.isdisjoint(float(x) for x in nb)
    ua = set(text_units(a.replace("-", " "))) - _STOP
    ub = set(text_units(b.replace("-", " "))) - _STOP
    ga = {_GROUP_OF[u] for u in ua if u in _GROUP_OF}
    gb = {_GROUP_OF[u] for u in ub if u in _GROUP_OF}
    if ga and gb:
        return ga.isdisjoint(gb)
    ua, ub = ua - _VAGUE, ub - _VAGUE
    if not ua or not ub:
        return False
    return not (ua <= ub or ub <= ua)


# --- claims in draft order -----------------------------------------------------------------


Claim = (
    PresenceClaim
    | TravelClaim
    | DeathClaim
    | RenameClaim
    | ItemClaim
    | KnowledgeClaim
    | AttributeClaim
    | TimeClaim
    | PayoffClaim
    | PlantClaim
)


@dataclass(frozen=True)
class ClaimEvent:
    """One claim with its place in the draft and the verbatim text it quotes there
    (empty when the quote is not in the draft)."""

    position: int
    order: int
    kind: str
    claim: Claim
    quote: str


def ordered_claims(draft: str, claims: ChapterClaims) -> list[ClaimEvent]:
    """Every claim in draft order; claims whose quote is not found come last, in the
    order the answer gave them."""
    events: list[ClaimEvent] = []
    order = 0
    # Within one quote, what sets the scene comes first: a rename, time passing, a journey.
    for kind, items in (
        ("rename", claims.renames),
        ("time", claims.time),
        ("travel", claims.travel),
        ("present", claims.present),
        ("death", claims.deaths),
        ("item", claims.items),
        ("knowledge", claims.knowledge),
        ("attribute", claims.attributes),
        ("payoff", claims.paid_off),
        ("plant", claims.planted),
    ):
        for item in items:
            order += 1
            found = locate(draft, item.quote)
            position, quote = found if found else (len(draft), "")
            events.append(ClaimEvent(position, order, kind, item, quote))
    return sorted(events, key=lambda e: (e.position, e.order))


class _Rules:
    """One pass over a chapter's claims in draft order."""

    def __init__(
        self,
        draft: str,
        claims: ChapterClaims,
        snapshot: WorldSnapshot,
        chapter: int,
        beats: ChapterBeats | None,
        language: str | None = None,
    ) -> None:
        self.draft = draft
        self.language = language
        self.claims = claims
        self.world = WorldIndex.of(snapshot)
        self.chapter = chapter
        self.beats = beats
        self.findings: list[Finding] = []
        self.first_sentence = next((s for _, s in _sentences(draft)), draft.strip()[:200])

    def find(
        self,
        kind: FindingKind,
        severity: Severity,
        quote: str,
        problem: str,
        suggestion: str,
        *change: FactSpec,
    ) -> None:
        """Record a finding (problem and suggestion as :meth:`say` worded them)."""
        self.findings.append(
            Finding(kind, severity, quote or self.first_sentence, problem, suggestion, change)
        )

    def say(self, english: Said, chinese: Said) -> Said:
        """The finding's words in the book's language."""
        return _say(self.language, english, chinese)

    def run(self) -> list[Finding]:
        if not self.first_sentence:
            return []
        # A claim whose quote is nowhere in the draft cannot be pointed at: a model that
        # reports what the draft does not say must not send it back for it.
        events = [e for e in ordered_claims(self.draft, self.claims) if e.quote]
        self._names(events)
        self._life(events)
        self._location(events)
        self._attributes(events)
        self._knowledge(events)
        self._custody(events)
        self._time(events)
        self._setups(events)
        return self.findings

    # --- names ------------------------------------------------------------------

    def _character_names(self, event: ClaimEvent) -> Iterator[str]:
        claim = event.claim
        for attr in ("character", "entity"):
            value = getattr(claim, attr, None)
            if isinstance(value, str):
                yield value
        if event.kind == "time" and getattr(claim, "kind", "") == "age":
            subject = getattr(claim, "subject", None)
            if subject:
                yield subject

    def _names(self, events: Sequence[ClaimEvent]) -> None:
        """Renames first (they make new names known), then every name used."""
        new_names = {_norm(e.name) for e in self.claims.new_entities}
        reported: set[str] = set()
        for event in events:
            if event.kind == "rename":
                rename = event.claim
                old = getattr(rename, "old", "")
                key = self.world.resolve(old)
                if key is not None:
                    self.world.add_form(getattr(rename, "new", ""), key)
                continue
            for name in self._character_names(event):
                norm = _norm(name)
                if not norm or norm in reported or self.world.resolve(name) is not None:
                    continue
                drift = self._drift(name, declared_new=norm in new_names)
                if drift is None:
                    continue
                reported.add(norm)
                key, form, how = drift
                entity = self.world.name(key)
                self.find(
                    "name",
                    "major",
                    event.quote,
                    *self.say(
                        (
                            f"{name!r} is not a name of anyone in the world, but {how} "
                            f"{form!r}, the world's name for {entity}; no rename says "
                            f"{entity} is now called {name!r}.",
                            f"Call {entity} {form!r}, or state the change of name in the text.",
                        ),
                        (
                            f"“{name}”不是世界中任何人的名字，却与{entity}的名字“{form}”"
                            f"极为相近；没有任何改名说明{entity}现在叫“{name}”。",
                            f"把{entity}称作“{form}”，或在正文中写明改名。",
                        ),
                    ),
                )

    def _drift(self, name: str, *, declared_new: bool) -> tuple[str, str, str] | None:
        """(key, form, how) of the known character ``name`` drifts from, if any."""
        wanted = _norm(_bare(name))
        words = wanted.split()
        cjk = is_cjk(wanted)
        best: tuple[int, str, str] | None = None
        for form, key in self.world.forms.items():
            if self.world.entities[key].kind != "character" or len(form.split()) != len(words):
                continue
            if cjk and len(form.replace(" ", "")) < 3:
                continue  # two-character names differ by one character all the time
            distance = damerau_levenshtein(wanted, form)
            if 0 < distance <= near_miss_threshold(form) and (best is None or distance < best[0]):
                best = (distance, key, form)
        # Chinese siblings' names often differ in one character: a name the claims
        # declare new is a new person there.
        if best is not None and not (cjk and declared_new):
            distance = best[0]
            letters = "letter" if distance == 1 else "letters"
            return best[1], self._display_form(best[1], best[2]), f"is {distance} {letters} from"
        if declared_new or len(words) < 2 or cjk:
            return None
        # A known first name with another surname: the same person, renamed by mistake
        # (not for CJK names, which put the family name first and share it in families).
        for form, key in self.world.forms.items():
            entity = self.world.entities[key]
            parts = form.split()
            if (
                entity.kind == "character"
                and len(parts) == len(words)
                and parts[0] == words[0]
                and parts[-1] != words[-1]
            ):
                return key, self._display_form(key, form), "shares the first name of"
        return None

    def _display_form(self, key: str, form: str) -> str:
        entity = self.world.entities[key]
        for name in (entity.name, *entity.aliases):
            if _norm(_bare(name)) == form or _norm(name) == form:
                return name
        return entity.name

    # --- life -------------------------------------------------------------------

    def _dead(self) -> set[str]:
        return {
            e.key
            for e in self.world.snapshot.entities
            if e.kind == "character"
            and (self.world.attribute(e.key, "status") or "").casefold() in DEAD_STATUSES
        }

    def _life(self, events: Sequence[ClaimEvent]) -> None:
        dead = dict.fromkeys(self._dead(), ("before this chapter", "在本章之前"))
        reported: set[str] = set()
        for event in events:
            claim = event.claim
            who = self.world.resolve(getattr(claim, "character", None), ("character",))
            if who is None:
                continue
            if event.kind == "death":
                dead.setdefault(who, ("earlier in this chapter", "在本章前文"))
                continue
            acting = event.kind in ("present", "travel", "item") or (
                event.kind == "knowledge" and getattr(claim, "action", "") == "learns"
            )
            if not acting or getattr(claim, "memory", False) or who not in dead:
                continue
            if who in reported:
                continue
            reported.add(who)
            name = self.world.name(who)
            when, when_zh = dead[who]
            self.find(
                "life",
                "major",
                event.quote,
                *self.say(
                    (
                        f"{name} died {when}, but here {name} is present and acting now, "
                        "not in a memory, flashback or report.",
                        f"Remove {name} from the scene, or make it a memory of {name}.",
                    ),
                    (
                        f"{name}{when_zh}已经死去，但在这里{name}正在场并有所行动，"
                        "而不是在回忆、闪回或转述中。",
                        f"让{name}离开这一场景，或把它写成对{name}的回忆。",
                    ),
                ),
                FactSpec(who, "status", value="alive", cause=AUTHOR_CAUSE),
            )

    # --- location ---------------------------------------------------------------

    def _location(self, events: Sequence[ClaimEvent]) -> None:
        # Where each character stands: (place key, scene or None for "before the chapter").
        where: dict[str, tuple[str, int | None]] = {}
        for fact in self.world.snapshot.facts:
            if fact.predicate == LOCATION_PREDICATE and fact.object is not None:
                entity = self.world.entities.get(fact.subject)
                if entity is not None and entity.kind == "character":
                    where[fact.subject] = (fact.object, None)
        free: set[str] = set()
        """Characters who may be somewhere new: they travelled, or time passed."""
        for event in events:
            claim = event.claim
            if event.kind == "time":
                if (
                    getattr(claim, "kind", "") in ("elapsed", "day")
                    and not getattr(claim, "memory", False)
                    and getattr(claim, "value", 0) > 0
                ):
                    free.update(where)
                continue
            who = self.world.resolve(getattr(claim, "character", None), ("character",))
            if who is None:
                continue
            if event.kind == "travel":
                free.add(who)
                continue
            if event.kind != "present" or getattr(claim, "memory", False):
                continue
            place = self.world.resolve(getattr(claim, "place", None), ("location",))
            if place is None:
                continue
            scene = int(getattr(claim, "scene", 1))
            previous = where.get(who)
            where[who] = (place, scene)
            if previous is None or self.world.same_place(previous[0], place):
                free.discard(who)
                continue
            if who in free:
                free.discard(who)
                continue
            name, here, there = (
                self.world.name(who),
                self.world.name(place),
                self.world.name(previous[0]),
            )
            if previous[1] is None:
                when = f"the world has {name} at {there} when this chapter begins"
                when_zh = f"本章开始时世界记录{name}在{there}"
            elif previous[1] == scene:
                when = f"earlier in the same scene {name} is at {there}"
                when_zh = f"同一场景中稍早{name}在{there}"
            else:
                when = f"in scene {previous[1]} {name} is at {there}"
                when_zh = f"第{previous[1]}场中{name}在{there}"
            self.find(
                "location",
                "major",
                event.quote,
                *self.say(
                    (
                        f"{name} is at {here} here, but {when}, and no travel or passing of "
                        "time comes in between.",
                        f"Show {name} travelling to {here} (or time passing), or keep {name} "
                        f"at {there}.",
                    ),
                    (
                        f"{name}在这里身处{here}，但{when_zh}，其间既没有赶路，也没有时间流逝。",
                        f"写出{name}前往{here}的过程（或时间的流逝），或让{name}留在{there}。",
                    ),
                ),
            )

    # --- fixed attributes ---------------------------------------------------------

    def _attributes(self, events: Sequence[ClaimEvent]) -> None:
        changed: dict[tuple[str, str], str] = {}
        for event in events:
            if event.kind != "attribute":
                continue
            claim = event.claim
            key = self.world.resolve(getattr(claim, "entity", None))
            if key is None:
                continue
            attribute = str(getattr(claim, "attribute", ""))
            value = str(getattr(claim, "value", ""))
            slot = (key, attribute_key(attribute))
            current = changed.get(slot) or self.world.fixed(key, attribute)
            if current is None or not values_conflict(current, value):
                continue
            if str(getattr(claim, "cause", "")).strip():
                changed[slot] = value
                continue
            name = self.world.name(key)
            label = attribute.replace("_", " ")
            self.find(
                "attribute",
                "major",
                event.quote,
                *self.say(
                    (
                        f"{name}'s {label} is fixed as {current!r}, but the draft says "
                        f"{value!r} and gives no cause for a change.",
                        f"Describe {name}'s {label} as {current!r}, or show what changed it.",
                    ),
                    (
                        f"{name}的{label}固定为“{current}”，但草稿写成“{value}”，"
                        "且没有交代变化的原因。",
                        f"把{name}的{label}写成“{current}”，或写出是什么改变了它。",
                    ),
                ),
                FactSpec(
                    key, self.world.stored_name(key, attribute), value=value, cause=AUTHOR_CAUSE
                ),
            )

    # --- knowledge -----------------------------------------------------------------

    def _knowledge(self, events: Sequence[ClaimEvent]) -> None:
        learned: set[tuple[str, str]] = set()
        for event in events:
            if event.kind != "knowledge":
                continue
            claim = event.claim
            who = self.world.resolve(getattr(claim, "character", None), ("character",))
            secret = self.world.secret(str(getattr(claim, "secret", "")))
            if who is None or secret is None:
                continue
            if getattr(claim, "action", "") == "learns":
                learned.add((who, secret))
                continue
            if (who, secret) in learned or self.world.related(who, KNOWS_PREDICATE, secret):
                continue
            name, what = self.world.name(who), self.world.name(secret)
            knowers = sorted(
                self.world.name(f.subject)
                for f in self.world.snapshot.facts
                if f.predicate == KNOWS_PREDICATE and f.object == secret
            )
            who_knows = f" (only {', '.join(knowers)} know it)" if knowers else ""
            who_knows_zh = f"（只有{'、'.join(knowers)}知道）" if knowers else ""
            self.find(
                "knowledge",
                "major",
                event.quote,
                *self.say(
                    (
                        f"{name} refers to the secret {what!r}, which {name} has not "
                        f"learned{who_knows}.",
                        f"Show {name} learning it first, or cut the reference.",
                    ),
                    (
                        f"{name}提到了秘密“{what}”，但{name}尚未得知此事{who_knows_zh}。",
                        f"先写{name}得知这件事，或删去这处提及。",
                    ),
                ),
                FactSpec(who, KNOWS_PREDICATE, object=secret),
            )

    # --- custody ------------------------------------------------------------------

    def _custody(self, events: Sequence[ClaimEvent]) -> None:
        holder: dict[str, str] = {}
        for fact in self.world.snapshot.facts:
            if fact.predicate == HOLDER_PREDICATE and fact.object is not None:
                holder[fact.subject] = fact.object
        for event in events:
            if event.kind != "item":
                continue
            claim = event.claim
            item = self.world.resolve(getattr(claim, "item", None), ("item",))
            who = self.world.resolve(getattr(claim, "character", None), ("character",))
            if item is None or who is None or getattr(claim, "memory", False):
                continue
            if getattr(claim, "action", "") == "receives":
                holder[item] = who
                continue
            current = holder.setdefault(item, who)
            if current == who:
                continue
            name, thing, owner = (
                self.world.name(who),
                self.world.name(item),
                self.world.name(current),
            )
            self.find(
                "custody",
                "major",
                event.quote,
                *self.say(
                    (
                        f"{name} has {thing} here, but {owner} holds it and no hand-over to "
                        f"{name} comes first.",
                        f"Show {owner} giving {thing} to {name} (or {name} taking it), or give "
                        f"the action to {owner}.",
                    ),
                    (
                        f"{name}在这里拿着{thing}，但它在{owner}手中，此前并没有交到{name}手里。",
                        f"写出{owner}把{thing}交给{name}（或{name}拿走它），或让{owner}来做这个动作。",
                    ),
                ),
                FactSpec(item, HOLDER_PREDICATE, object=who),
            )
            holder[item] = who

    # --- story time ---------------------------------------------------------------

    def _time(self, events: Sequence[ClaimEvent]) -> None:
        now = self.world.day()
        for event in events:
            if event.kind != "time" or getattr(event.claim, "memory", False):
                continue
            claim = event.claim
            kind = str(getattr(claim, "kind", ""))
            value = float(getattr(claim, "value", 0))
            days = value * UNIT_DAYS[str(getattr(claim, "unit", "day"))]
            if kind == "day":
                if now is not None and value < now:
                    self.find(
                        "time",
                        "major",
                        event.quote,
                        *self.say(
                            (
                                f"This is day {value:g} of the story, but the story had "
                                f"already reached day {now:g}; time runs backwards without a "
                                "flashback.",
                                "Move the scene later, or mark it as a flashback.",
                            ),
                            (
                                f"这里是故事的第{value:g}天，但故事已经到了第{now:g}天；"
                                "没有闪回，时间却倒流了。",
                                "把这一场景移到更晚，或标明它是闪回。",
                            ),
                        ),
                    )
                now = value if now is None else max(now, value)
            elif kind == "elapsed":
                now = None if now is None else now + days
            elif kind == "age" and now is not None:
                self._age(event, value * UNIT_DAYS[str(getattr(claim, "unit", "year"))], now)
            elif kind == "since" and now is not None:
                self._since(event, days, now)

    def _age(self, event: ClaimEvent, claimed_days: float, now: float) -> None:
        who = self.world.resolve(getattr(event.claim, "subject", None), ("character",))
        born = self.world.number(who, BORN_DAY) if who else None
        if who is None or born is None:
            return
        expected = (now - born) / UNIT_DAYS["year"]
        claimed = claimed_days / UNIT_DAYS["year"]
        if abs(expected - claimed) <= 1.0:
            return
        name = self.world.name(who)
        self.find(
            "time",
            "major",
            event.quote,
            *self.say(
                (
                    f"{name} is {claimed:g} years old here, but born on day {born:g} and with "
                    f"the story at day {now:g}, {name} is {expected:.0f}.",
                    f"Give {name}'s age as {expected:.0f}.",
                ),
                (
                    f"{name}在这里{claimed:g}岁，但其生于第{born:g}天，故事现在是第{now:g}天，"
                    f"{name}应为{expected:.0f}岁。",
                    f"把{name}的年龄写成{expected:.0f}岁。",
                ),
            ),
            FactSpec(who, BORN_DAY, value=f"{round(now - claimed_days)}", cause=AUTHOR_CAUSE),
        )

    def _since(self, event: ClaimEvent, claimed: float, now: float) -> None:
        key = self.world.resolve(getattr(event.claim, "subject", None), ("event",))
        when = self.world.number(key, DAY) if key else None
        if key is None or when is None:
            return
        name = self.world.name(key)
        if when > now:
            self.find(
                "time",
                "major",
                event.quote,
                *self.say(
                    (
                        f"{name} is spoken of as past, but it happens on day {when:g} and the "
                        f"story is at day {now:g}.",
                        f"Do not refer to {name} before it happens.",
                    ),
                    (
                        f"{name}被当作过去的事提起，但它发生在第{when:g}天，而故事才到第{now:g}天。",
                        f"不要在{name}发生之前提到它。",
                    ),
                ),
            )
            return
        actual = now - when
        unit_name = str(getattr(event.claim, "unit", "day"))
        unit = UNIT_DAYS[unit_name]
        if abs(claimed - actual) <= max(unit, 0.3 * actual):
            return
        self.find(
            "time",
            "major",
            event.quote,
            *self.say(
                (
                    f"This puts {name} {claimed / unit:g} {unit_name}(s) ago, but it happened "
                    f"on day {when:g}, {actual:g} days before the story's present "
                    f"(day {now:g}).",
                    f"Date {name} {actual:g} days back.",
                ),
                (
                    f"这里说{name}发生在{claimed / unit:g}{_ZH_UNITS[unit_name]}前，但它发生在"
                    f"第{when:g}天，距故事的当下（第{now:g}天）已有{actual:g}天。",
                    f"把{name}的时间改为{actual:g}天前。",
                ),
            ),
        )

    # --- set-ups ------------------------------------------------------------------

    def _setups(self, events: Sequence[ClaimEvent]) -> None:
        planted_here = {slugify(p.key) for p in self.claims.planted}
        paid: set[str] = set()
        for event in events:
            if event.kind != "payoff":
                continue
            setup = self.world.setup(str(getattr(event.claim, "setup", "")))
            if setup is None:
                continue
            paid.add(setup.key)
            if setup.planted_chapter > self.chapter and setup.key not in planted_here:
                self.find(
                    "setup",
                    "major",
                    event.quote,
                    *self.say(
                        (
                            f"This pays off the set-up {setup.key!r} "
                            f"({setup.description.rstrip('.')}), which is not planted until "
                            f"chapter {setup.planted_chapter}.",
                            "Plant it first (here, before the pay-off), or hold the pay-off back.",
                        ),
                        (
                            f"这里兑现了伏笔“{setup.key}”（{setup.description.rstrip('.。')}），"
                            f"但它要到第{setup.planted_chapter}章才埋下。",
                            "先埋下伏笔（在本章兑现之前），或推迟兑现。",
                        ),
                    ),
                )
            elif setup.paid_off_chapter is not None and setup.paid_off_chapter < self.chapter:
                self.find(
                    "setup",
                    "minor",
                    event.quote,
                    *self.say(
                        (
                            f"The set-up {setup.key!r} was already paid off in chapter "
                            f"{setup.paid_off_chapter}.",
                            "Refer back to that pay-off instead of repeating it.",
                        ),
                        (
                            f"伏笔“{setup.key}”已在第{setup.paid_off_chapter}章兑现过。",
                            "回指那次兑现，而不是重复它。",
                        ),
                    ),
                )
        promised = {slugify(k) for k in (self.beats.payoff if self.beats else [])}
        for setup in self.world.snapshot.setups:
            if setup.key in paid or setup.paid_off_chapter is not None:
                continue
            if setup.planted_chapter > self.chapter and setup.key not in planted_here:
                continue
            due_here = setup.due_chapter == self.chapter or setup.key in promised
            if not due_here and setup.due_chapter > self.chapter:
                continue
            late = setup.due_chapter < self.chapter
            severity: Severity = "minor" if late and setup.key not in promised else "major"
            when = (
                f"was due in chapter {setup.due_chapter}"
                if late
                else "is due in this chapter" + (" (the beats promise it)" if promised else "")
            )
            when_zh = (
                f"本应在第{setup.due_chapter}章兑现"
                if late
                else "应在本章兑现" + ("（章节节拍承诺了它）" if promised else "")
            )
            self.find(
                "setup",
                severity,
                self._anchor(setup.entities),
                *self.say(
                    (
                        f"The set-up {setup.key!r} ({setup.description.rstrip('.')}) {when}, "
                        "and the draft does not pay it off (nothing here shows it).",
                        "Show the pay-off in this chapter, or have the director re-plan it.",
                    ),
                    (
                        f"伏笔“{setup.key}”（{setup.description.rstrip('.。')}）{when_zh}，"
                        "但草稿没有兑现它（文中看不到）。",
                        "在本章写出兑现，或请导演重新安排。",
                    ),
                ),
            )

    def _anchor(self, keys: Iterable[str]) -> str:
        """The first sentence naming one of ``keys``, else the first sentence."""
        forms = [
            form for form, key in self.world.forms.items() if key in set(keys) and len(form) >= 2
        ]
        for _, sentence in _sentences(self.draft):
            if any(form in _norm(sentence) for form in forms):
                return _clip(sentence)
        return _clip(self.first_sentence)


def check_claims(
    draft: str,
    claims: ChapterClaims,
    snapshot: WorldSnapshot,
    chapter: int,
    beats: ChapterBeats | None = None,
    language: str | None = None,
) -> list[Finding]:
    """Every contradiction between ``claims`` (of ``draft``) and the world as it stood
    before ``chapter``, majors first then in draft order, duplicates removed; worded in
    the book's ``language`` (Chinese, or English for every other)."""
    findings = _Rules(draft, claims, snapshot, chapter, beats, language).run()
    return _ranked(draft, findings)


def _ranked(draft: str, findings: Iterable[Finding]) -> list[Finding]:
    unique: dict[tuple[str, str], Finding] = {}
    for finding in findings:
        unique.setdefault((finding.quote, finding.problem), finding)
    return sorted(
        unique.values(),
        key=lambda f: (f.severity != "major", draft.find(f.quote), FINDING_KINDS.index(f.kind)),
    )


# --- repetition and length -----------------------------------------------------------------


def _paragraphs(text: str) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    for match in re.finditer(r"[^\n]+(?:\n(?![ \t]*\n)[^\n]+)*", text):
        if match.group(0).strip():
            out.append((match.start(), match.group(0)))
    return out


def _shingles(units: Sequence[str], size: int) -> set[tuple[str, ...]]:
    return {tuple(units[i : i + size]) for i in range(len(units) - size + 1)}


def _shingle_size(text: str) -> int:
    """Eight words, or twelve characters of CJK text."""
    return 12 if is_cjk(text) else 8


PASSAGE_UNITS = 30
"""A repeated paragraph this long (words, or CJK characters) is a repeated passage (major);
a shorter one (a line of dialogue, a stock sentence) is reported as minor."""
REPETITIONS_REPORTED = 3
"""At most this many repetition findings per draft: the first ones say enough."""


def repetition_findings(
    draft: str, earlier: Sequence[tuple[int, str]] = (), language: str | None = None
) -> list[Finding]:
    """Paragraphs that repeat an earlier paragraph of the draft, or a passage of an
    earlier chapter (``earlier``: (chapter, text) pairs): at least half of the
    paragraph's shingles (runs of eight words, or twelve CJK characters) occurred there.
    Major for a paragraph of :data:`PASSAGE_UNITS` or more, else minor; at most
    :data:`REPETITIONS_REPORTED`, majors first."""
    size = _shingle_size(draft)
    previous_chapters = [(n, _shingles(text_units(text), size)) for n, text in earlier]
    seen: list[tuple[int, set[tuple[str, ...]]]] = []
    findings: list[Finding] = []
    for number, (_, paragraph) in enumerate(_paragraphs(draft), 1):
        units = text_units(paragraph)
        shingles = _shingles(units, size)
        if not shingles:
            continue
        quote = _clip(next((s for _, s in _sentences(paragraph)), paragraph.strip()))
        source: Said | None = None
        for other, known in seen:
            if len(shingles & known) >= REPEAT_SHARE * len(shingles):
                source = (f"paragraph {other} of this chapter", f"本章第{other}段")
                break
        if source is None:
            for chapter, known in previous_chapters:
                if len(shingles & known) >= REPEAT_SHARE * len(shingles):
                    source = (f"chapter {chapter}", f"第{chapter}章")
                    break
        seen.append((number, shingles))
        if source is None:
            continue
        severity: Severity = "major" if len(units) >= PASSAGE_UNITS else "minor"
        findings.append(
            Finding(
                "repetition",
                severity,
                quote,
                *_say(
                    language,
                    (
                        f"Paragraph {number} repeats {source[0]} nearly word for word.",
                        "Replace the repeated passage with new action that moves the chapter on.",
                    ),
                    (
                        f"第{number}段几乎逐字重复了{source[1]}。",
                        "把重复的段落换成推动本章前进的新情节。",
                    ),
                ),
            )
        )
    findings.sort(key=lambda f: f.severity != "major")
    return findings[:REPETITIONS_REPORTED]


def length_findings(draft: str, target: int, language: str | None = None) -> list[Finding]:
    """A draft far from ``target`` (in words, or characters for CJK text): shorter than
    half of it (major) or longer than twice it (minor)."""
    sentences = _sentences(draft)
    if not sentences or target <= 0:
        return []
    length = text_length(draft)
    unit = "characters" if is_cjk(draft) else "words"
    quote = _clip(sentences[0][1])
    if length < SHORT_RATIO * target:
        return [
            Finding(
                "length",
                "major",
                quote,
                *_say(
                    language,
                    (
                        f"The chapter has {length} {unit}, far short of the target of {target}.",
                        "Develop the beats into full scenes to reach the target length.",
                    ),
                    (
                        f"本章共{length}字，远少于目标的{target}字。",
                        "把节拍展开成完整的场景，以达到目标长度。",
                    ),
                ),
            )
        ]
    if length > LONG_RATIO * target:
        return [
            Finding(
                "length",
                "minor",
                quote,
                *_say(
                    language,
                    (
                        f"The chapter has {length} {unit}, more than twice the target of {target}.",
                        "Tighten the scenes towards the target length.",
                    ),
                    (
                        f"本章共{length}字，超过目标{target}字的两倍。",
                        "收紧各个场景，向目标长度靠拢。",
                    ),
                ),
            )
        ]
    return []


def text_findings(
    draft: str, target: int, earlier: Sequence[tuple[int, str]] = (), language: str | None = None
) -> list[Finding]:
    """Repetition and length findings of a draft (no claims needed)."""
    return _ranked(
        draft,
        [
            *repetition_findings(draft, earlier, language),
            *length_findings(draft, target, language),
        ],
    )


# --- everything a draft is checked for -----------------------------------------------------

_PROSE_CHECKS: tuple[tuple[FindingKind, Callable[..., list[ReviewIssue]]], ...] = (
    ("life", dead_character_findings),
    ("location", two_places_findings),
    ("attribute", fixed_attribute_findings),
    ("name", near_miss_name_findings),
)
"""The English prose heuristics kept as an extra signal, with the kind each reports."""


def prose_findings(
    draft: str, snapshot: WorldSnapshot, beats: ChapterBeats | None, chapter: int
) -> list[Finding]:
    """The English prose heuristics of :mod:`nodes.consistency` as findings (nothing for
    CJK text, which they cannot read)."""
    if is_cjk(draft):
        return []
    found: list[Finding] = []
    for kind, check in _PROSE_CHECKS:
        for issue in check(draft, snapshot, beats, chapter):
            found.append(
                Finding(kind, issue.severity, issue.quote, issue.problem, issue.suggestion)
            )
    return found


def draft_findings(
    draft: str,
    claims: ChapterClaims,
    snapshot: WorldSnapshot,
    chapter: int,
    beats: ChapterBeats | None,
    *,
    target: int,
    earlier: Sequence[tuple[int, str]] = (),
    language: str | None = None,
) -> list[Finding]:
    """Every finding for a draft: its claims against the world, repetition and length,
    and the English prose heuristics where they add a sentence the claims did not; worded
    in the book's ``language`` (Chinese, or English for every other)."""
    found = [
        *check_claims(draft, claims, snapshot, chapter, beats, language),
        *text_findings(draft, target, earlier, language),
    ]
    quoted = {(f.kind, f.quote) for f in found}
    extra = [
        f
        for f in prose_findings(draft, snapshot, beats, chapter)
        if (f.kind, f.quote) not in quoted
    ]
    return _ranked(draft, [*found, *extra])
