"""Benchmark: planted contradictions, found or missed (prints figures; asserts nothing).

    uv run python tests/benchmarks/consistency.py [--gaps 1,5,20] [--json FILE]
    uv run python tests/benchmarks/consistency.py --mode model [--model qwen15] [--gaps 1] [--split]

Builds small novels, each with one planted contradiction or one legitimate look-alike,
for the eight kinds of :mod:`nodes.integrity` (life, location, name, attribute,
knowledge, custody, time, set-up). The fact a case turns on is recorded in chapter 1 (or
at the seed) and the tested chapter comes 1, 5 or 20 chapters later; the chapters in
between record unrelated changes and move the story's clock on, as a book would. Each
kind has several phrasings of the contradiction and look-alikes that must not be flagged:
memories of the dead, flashbacks, travel between scenes, time skips, places within
places, explicit renames, caused changes, synonyms, learning then referring, hand-over
then use, pay-offs on time.

Worlds are stored through the real SQL world memory (a temporary SQLite file), so the
fact model is exercised as in a book. Mode ``rules`` gives the rules perfect claims (what
the draft states, as the extraction step should report it) and measures the rules alone.
Mode ``model`` has a real model read the claims from each draft (the reviewer's
``chapter_claims`` call, constrained to the schema) on a local ``llama-server``
(``tests/services/llama.py``; ``--llm-url`` for another OpenAI-compatible endpoint), then
runs the same rules, and reports per kind how often the extraction kept the claim the
case turns on, and where the reading lost each missed contradiction (no answer, a part
of the claims left empty, quotes not in the draft, or claims saying something else).
``--dump FILE`` writes every case as a JSON line (draft, expected claims, claims read,
findings) to look into. A model call that fails counts as a miss (and as no alarm).

Prints recall per kind and gap (a contradiction counts as found when a major finding of
its kind is reported) and the false-alarm rate (look-alikes with any major finding).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from errors import ScribeError  # noqa: E402
from memory.db import make_engine  # noqa: E402 - the path above makes the repo importable
from memory.world.port import (  # noqa: E402
    EntitySpec,
    FactSpec,
    Rename,
    SetupSpec,
    WorldChanges,
    WorldMemory,
    WorldSnapshot,
)
from memory.world.sql import SqlWorldMemory  # noqa: E402
from nodes.integrity import (  # noqa: E402
    CONTRADICTION_KINDS,
    TIMELINE_KEY,
    Finding,
    check_claims,
    locate,
)
from nodes.llm.factory import build_gateway  # noqa: E402
from nodes.llm.gateway import ModelGateway  # noqa: E402
from nodes.reviewer import read_draft  # noqa: E402
from nodes.schemas import AGENTS, ChapterBeats, ChapterClaims, ClaimsInput  # noqa: E402
from nodes.world_view import world_brief  # noqa: E402
from server.settings import load_settings  # noqa: E402
from tests.services import llama  # noqa: E402

PLANT_CHAPTER = 1
"""The chapter that records the fact a case turns on."""
FILLER = (
    "Wind rattled the shutters, and gulls wheeled over the grey water.",
    "Somewhere below, a cart creaked along the harbour road.",
)


def day_of(chapter: int) -> int:
    """The story's day at the end of ``chapter`` (the clock moves two days a chapter)."""
    return 10 + 2 * chapter


def seed() -> WorldChanges:
    """The world every case starts from (chapter 0)."""
    entities = (
        EntitySpec(
            "mara-venn",
            "character",
            "Mara Venn",
            fixed={
                "eye_colour": "grey",
                "hair_colour": "black",
                "species": "human",
                "born_day": str(-17 * 365),
            },
            mutable={"status": "alive"},
        ),
        EntitySpec("tobin-hale", "character", "Tobin Hale", mutable={"status": "alive"}),
        EntitySpec("ilse-brandt", "character", "Ilse Brandt", mutable={"status": "alive"}),
        EntitySpec("oren-kask", "character", "Oren Kask", mutable={"status": "alive"}),
        EntitySpec("lighthouse", "location", "the Lighthouse"),
        EntitySpec("lamp-room", "location", "the Lamp Room"),
        EntitySpec("market", "location", "the Market"),
        EntitySpec("citadel", "location", "the Citadel"),
        EntitySpec("harbour", "location", "the Harbour"),
        EntitySpec("brass-key", "item", "the Brass Key"),
        EntitySpec("silver-compass", "item", "the Silver Compass"),
        EntitySpec("the-heir", "secret", "the heir", description="Mara is the old king's daughter"),
        EntitySpec("great-fire", "event", "the Great Fire", fixed={"day": "-730"}),
        EntitySpec("the-flood", "event", "the Flood", fixed={"day": "900"}),
        EntitySpec(TIMELINE_KEY, "event", "Story time"),
    )
    facts = (
        FactSpec("lamp-room", "part_of", object="lighthouse"),
        FactSpec("oren-kask", "located_in", object="harbour"),
        FactSpec("tobin-hale", "located_in", object="harbour"),
        FactSpec("ilse-brandt", "located_in", object="citadel"),
        FactSpec(TIMELINE_KEY, "day", value=str(day_of(0))),
    )
    return WorldChanges(entities=entities, facts=facts)


def filler_chapter(chapter: int) -> WorldChanges:
    """An unrelated chapter between the planted fact and the tested chapter."""
    place = "market" if chapter % 2 else "harbour"
    return WorldChanges(
        facts=(
            FactSpec("oren-kask", "located_in", object=place),
            FactSpec("oren-kask", "mood", value=("wary", "calm", "grim")[chapter % 3]),
            FactSpec(TIMELINE_KEY, "day", value=str(day_of(chapter))),
        )
    )


@dataclass
class Draft:
    """A tested chapter's text and its perfect claims, built sentence by sentence."""

    sentences: list[str] = field(default_factory=lambda: [FILLER[0]])
    claims: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    payoff: list[str] = field(default_factory=list)

    def say(self, sentence: str, *claims: tuple[str, dict[str, Any]]) -> Draft:
        self.sentences.append(sentence)
        for part, claim in claims:
            self.claims[part].append({"quote": sentence, **claim})
        return self

    def scene(self) -> Draft:
        self.sentences.append("* * *")
        return self

    def text(self) -> str:
        paragraphs: list[str] = []
        for sentence in [*self.sentences, FILLER[1]]:
            paragraphs.append(sentence)
        return "\n\n".join(paragraphs)

    def chapter_claims(self) -> ChapterClaims:
        return ChapterClaims.model_validate({"summary": "A chapter.", **self.claims})


@dataclass(frozen=True)
class Case:
    """One tested chapter: a contradiction of ``kind`` or a look-alike that is none."""

    kind: str
    variant: str
    contradiction: bool
    gap: int
    planted: WorldChanges
    draft: Draft

    @property
    def chapter(self) -> int:
        return PLANT_CHAPTER + self.gap


Variant = Callable[[int], tuple[WorldChanges, Draft]]


def present(who: str, place: str | None = None, scene: int = 1, memory: bool = False) -> Any:
    return ("present", {"character": who, "place": place, "scene": scene, "memory": memory})


def _now(gap: int) -> int:
    return day_of(PLANT_CHAPTER + gap - 1)


# --- the eight kinds: (variant name, contradiction?, builder) ------------------------------

DEAD = WorldChanges(facts=(FactSpec("tobin-hale", "status", value="dead"),))
AT_LIGHTHOUSE = WorldChanges(facts=(FactSpec("mara-venn", "located_in", object="lighthouse"),))
NOTHING = WorldChanges()


def life() -> Iterator[tuple[str, bool, Variant]]:
    yield (
        "acts",
        True,
        lambda g: (
            DEAD,
            Draft().say(
                "Tobin Hale walked into the kitchen of the Lighthouse and poured the tea.",
                present("Tobin Hale", "the Lighthouse"),
            ),
        ),
    )
    yield (
        "speaks",
        True,
        lambda g: (
            DEAD,
            Draft().say(
                "\u201cLeave the lamp burning,\u201d Tobin said from the doorway.", present("Tobin")
            ),
        ),
    )
    yield (
        "travels",
        True,
        lambda g: (
            DEAD,
            Draft().say(
                "Tobin rode north to the Citadel before dawn.",
                ("travel", {"character": "Tobin", "to": "the Citadel"}),
            ),
        ),
    )
    yield (
        "holds",
        True,
        lambda g: (
            DEAD,
            Draft().say(
                "Tobin turned the Silver Compass over in his fingers.",
                ("items", {"item": "the Silver Compass", "character": "Tobin", "action": "holds"}),
            ),
        ),
    )
    yield (
        "memory",
        False,
        lambda g: (
            DEAD,
            Draft().say(
                "Mara remembered how Tobin used to pour the tea.", present("Tobin", memory=True)
            ),
        ),
    )
    yield (
        "flashback",
        False,
        lambda g: (
            DEAD,
            Draft().say(
                "In the flashback, Tobin laughed at the storm from the Lighthouse gallery.",
                present("Tobin", "the Lighthouse", memory=True),
            ),
        ),
    )
    yield (
        "mention",
        False,
        lambda g: (
            DEAD,
            Draft().say("Mara set Tobin's old cup on the shelf and did not look at it again."),
        ),
    )
    yield (
        "report",
        False,
        lambda g: (
            DEAD,
            Draft().say(
                "The fishermen said Tobin had once sailed through a storm to the Citadel.",
                present("Tobin", "the Citadel", memory=True),
            ),
        ),
    )


def location() -> Iterator[tuple[str, bool, Variant]]:
    yield (
        "elsewhere",
        True,
        lambda g: (
            AT_LIGHTHOUSE,
            Draft().say(
                "Mara stood among the stalls of the Market.", present("Mara", "the Market")
            ),
        ),
    )
    yield (
        "two places, one scene",
        True,
        lambda g: (
            AT_LIGHTHOUSE,
            Draft()
            .say("Mara climbed the stairs of the Lighthouse.", present("Mara", "the Lighthouse"))
            .say("Mara haggled for fish at the Market.", present("Mara", "the Market")),
        ),
    )
    yield (
        "next scene, no travel",
        True,
        lambda g: (
            AT_LIGHTHOUSE,
            Draft()
            .say("Mara trimmed the wick in the Lighthouse.", present("Mara", "the Lighthouse"))
            .scene()
            .say("Mara waited at the Citadel gate.", present("Mara", "the Citadel", scene=2)),
        ),
    )
    yield (
        "travel",
        False,
        lambda g: (
            AT_LIGHTHOUSE,
            Draft()
            .say(
                "Mara walked down the cliff path to the Market.",
                ("travel", {"character": "Mara", "to": "the Market"}),
            )
            .say("Mara stood among the stalls of the Market.", present("Mara", "the Market")),
        ),
    )
    yield (
        "time skip",
        False,
        lambda g: (
            AT_LIGHTHOUSE,
            Draft().say(
                "Three days later, Mara stood among the stalls of the Market.",
                ("time", {"kind": "elapsed", "value": 3, "unit": "day"}),
                present("Mara", "the Market"),
            ),
        ),
    )
    yield (
        "place within place",
        False,
        lambda g: (
            AT_LIGHTHOUSE,
            Draft().say(
                "Mara climbed to the Lamp Room and wiped the glass.",
                present("Mara", "the Lamp Room"),
            ),
        ),
    )
    yield (
        "travel between scenes",
        False,
        lambda g: (
            AT_LIGHTHOUSE,
            Draft()
            .say("Mara trimmed the wick in the Lighthouse.", present("Mara", "the Lighthouse"))
            .say(
                "At noon Mara set out for the Citadel.",
                ("travel", {"character": "Mara", "to": "the Citadel"}),
            )
            .scene()
            .say("Mara waited at the Citadel gate.", present("Mara", "the Citadel", scene=2)),
        ),
    )


RENAMED = WorldChanges(renames=(Rename("mara-venn", "Wren"),))
NEWCOMER = {"name": "Kell Oduya", "kind": "character", "description": "a stranger"}


def name() -> Iterator[tuple[str, bool, Variant]]:
    yield (
        "one letter",
        True,
        lambda g: (NOTHING, Draft().say("Marra set the lamp on the table.", present("Marra"))),
    )
    yield (
        "other surname",
        True,
        lambda g: (
            NOTHING,
            Draft().say("Mara Vance set the lamp on the table.", present("Mara Vance")),
        ),
    )
    yield (
        "vowel swap",
        True,
        lambda g: (
            NOTHING,
            Draft().say("Tobin looked up as Ilsa Brandt came in.", present("Ilsa Brandt")),
        ),
    )
    yield (
        "renamed before",
        False,
        lambda g: (RENAMED, Draft().say("Wren set the lamp on the table.", present("Wren"))),
    )
    yield (
        "renamed here",
        False,
        lambda g: (
            NOTHING,
            Draft()
            .say(
                "From that night on, Mara called herself Wren.",
                ("renames", {"old": "Mara", "new": "Wren"}),
            )
            .say("Wren set the lamp on the table.", present("Wren")),
        ),
    )
    yield (
        "newcomer",
        False,
        lambda g: (
            NOTHING,
            Draft().say(
                "A stranger named Kell Oduya stepped in from the rain.",
                present("Kell Oduya"),
                ("new_entities", dict(NEWCOMER)),
            ),
        ),
    )
    yield (
        "surname only",
        False,
        lambda g: (NOTHING, Draft().say("Venn set the lamp on the table.", present("Venn"))),
    )


SCARRED = WorldChanges(
    entities=(EntitySpec("mara-venn", "character", "Mara Venn", fixed={"scar": "left cheek"}),)
)
DYED = WorldChanges(facts=(FactSpec("mara-venn", "hair_colour", value="red", cause="dyed"),))


def attr(attribute: str, value: str, cause: str = "") -> tuple[str, dict[str, Any]]:
    return (
        "attributes",
        {"entity": "Mara", "attribute": attribute, "value": value, "cause": cause},
    )


def attribute() -> Iterator[tuple[str, bool, Variant]]:
    yield (
        "eye colour",
        True,
        lambda g: (NOTHING, Draft().say("Mara's blue eyes narrowed.", attr("eye_colour", "blue"))),
    )
    yield (
        "scar side",
        True,
        lambda g: (
            SCARRED,
            Draft().say(
                "The scar on Mara's right cheek itched in the cold.", attr("scar", "right cheek")
            ),
        ),
    )
    yield (
        "species",
        True,
        lambda g: (
            NOTHING,
            Draft().say("Mara, an elf of the northern woods, bowed low.", attr("species", "elf")),
        ),
    )
    yield (
        "hair colour",
        True,
        lambda g: (
            NOTHING,
            Draft().say("Mara pushed back her golden hair.", attr("hair", "golden")),
        ),
    )
    yield (
        "synonym",
        False,
        lambda g: (NOTHING, Draft().say("Mara's silver eyes narrowed.", attr("eyes", "silver"))),
    )
    yield (
        "caused here",
        False,
        lambda g: (
            NOTHING,
            Draft().say(
                "Mara had dyed her hair red with madder root.",
                attr("hair_colour", "red", "dyed with madder root"),
            ),
        ),
    )
    yield (
        "caused before",
        False,
        lambda g: (DYED, Draft().say("Mara pushed back her red hair.", attr("hair_colour", "red"))),
    )
    yield (
        "restated",
        False,
        lambda g: (
            SCARRED,
            Draft().say(
                "The scar on Mara's left cheek itched in the cold.", attr("scar", "left cheek")
            ),
        ),
    )


ILSE_KNOWS = WorldChanges(facts=(FactSpec("ilse-brandt", "knows", object="the-heir"),))
BOTH_KNOW = WorldChanges(
    facts=(
        FactSpec("ilse-brandt", "knows", object="the-heir"),
        FactSpec("tobin-hale", "knows", object="the-heir"),
    )
)
SECRET = "Mara is the old king's daughter"


def know(who: str, action: str, secret: str = SECRET) -> tuple[str, dict[str, Any]]:
    return ("knowledge", {"character": who, "secret": secret, "action": action})


def knowledge() -> Iterator[tuple[str, bool, Variant]]:
    yield (
        "refers",
        True,
        lambda g: (
            ILSE_KNOWS,
            Draft().say(
                "Tobin whispered that Mara was the old king's daughter.", know("Tobin", "refers")
            ),
        ),
    )
    yield (
        "by name",
        True,
        lambda g: (
            ILSE_KNOWS,
            Draft().say(
                "Tobin bowed to Mara as one bows to the heir.", know("Tobin", "refers", "the heir")
            ),
        ),
    )
    yield (
        "before learning",
        True,
        lambda g: (
            ILSE_KNOWS,
            Draft()
            .say("Tobin hinted that Mara was the old king's daughter.", know("Tobin", "refers"))
            .say(
                "Only then did Ilse tell Tobin the truth about Mara's father.",
                know("Tobin", "learns"),
            ),
        ),
    )
    yield (
        "knower",
        False,
        lambda g: (
            ILSE_KNOWS,
            Draft().say(
                "Ilse whispered that Mara was the old king's daughter.", know("Ilse", "refers")
            ),
        ),
    )
    yield (
        "learns then refers",
        False,
        lambda g: (
            ILSE_KNOWS,
            Draft()
            .say("Ilse told Tobin that Mara was the old king's daughter.", know("Tobin", "learns"))
            .say(
                "Tobin bowed to Mara as one bows to the heir.", know("Tobin", "refers", "the heir")
            ),
        ),
    )
    yield (
        "learned before",
        False,
        lambda g: (
            BOTH_KNOW,
            Draft().say(
                "Tobin whispered that Mara was the old king's daughter.", know("Tobin", "refers")
            ),
        ),
    )


ILSE_HOLDS = WorldChanges(facts=(FactSpec("brass-key", "held_by", object="ilse-brandt"),))
TOBIN_HOLDS = WorldChanges(facts=(FactSpec("brass-key", "held_by", object="tobin-hale"),))


def item(who: str, action: str = "holds", memory: bool = False) -> tuple[str, dict[str, Any]]:
    return (
        "items",
        {"item": "the Brass Key", "character": who, "action": action, "memory": memory},
    )


def custody() -> Iterator[tuple[str, bool, Variant]]:
    yield (
        "uses",
        True,
        lambda g: (
            ILSE_HOLDS,
            Draft().say("Tobin turned the Brass Key in the lock.", item("Tobin")),
        ),
    )
    yield (
        "pockets",
        True,
        lambda g: (
            ILSE_HOLDS,
            Draft().say("Mara slipped the Brass Key back into her pocket.", item("Mara")),
        ),
    )
    yield (
        "unlocks",
        True,
        lambda g: (
            ILSE_HOLDS,
            Draft().say("Tobin unlocked the vault with the Brass Key.", item("Tobin")),
        ),
    )
    yield (
        "hand-over then use",
        False,
        lambda g: (
            ILSE_HOLDS,
            Draft()
            .say("Ilse pressed the Brass Key into Tobin's hand.", item("Tobin", "receives"))
            .say("Tobin turned the Brass Key in the lock.", item("Tobin")),
        ),
    )
    yield (
        "holder uses",
        False,
        lambda g: (ILSE_HOLDS, Draft().say("Ilse turned the Brass Key in the lock.", item("Ilse"))),
    )
    yield (
        "handed over before",
        False,
        lambda g: (
            TOBIN_HOLDS,
            Draft().say("Tobin turned the Brass Key in the lock.", item("Tobin")),
        ),
    )
    yield (
        "memory",
        False,
        lambda g: (
            ILSE_HOLDS,
            Draft().say(
                "Mara remembered Tobin turning the Brass Key years ago.", item("Tobin", memory=True)
            ),
        ),
    )


def when(
    kind: str, value: int, unit: str = "day", subject: str | None = None, memory: bool = False
) -> tuple[str, dict[str, Any]]:
    return (
        "time",
        {"kind": kind, "value": value, "unit": unit, "subject": subject, "memory": memory},
    )


def story_time() -> Iterator[tuple[str, bool, Variant]]:
    yield (
        "day goes back",
        True,
        lambda g: (
            NOTHING,
            Draft().say(
                f"On day {_now(g) - 5} of the long winter, Mara woke early.",
                when("day", _now(g) - 5),
            ),
        ),
    )
    yield (
        "wrong age",
        True,
        lambda g: (
            NOTHING,
            Draft().say("Mara had turned thirty that spring.", when("age", 30, "year", "Mara")),
        ),
    )
    yield (
        "event misdated",
        True,
        lambda g: (
            NOTHING,
            Draft().say(
                "The Great Fire had burned the harbour ten years ago.",
                when("since", 10, "year", "the Great Fire"),
            ),
        ),
    )
    yield (
        "event not yet",
        True,
        lambda g: (
            NOTHING,
            Draft().say(
                "Everyone still spoke of the Flood of last week.",
                when("since", 1, "week", "the Flood"),
            ),
        ),
    )
    yield (
        "right age",
        False,
        lambda g: (
            NOTHING,
            Draft().say("Mara was seventeen that spring.", when("age", 17, "year", "Mara")),
        ),
    )
    yield (
        "flashback day",
        False,
        lambda g: (
            NOTHING,
            Draft().say(
                f"Mara remembered day {_now(g) - 5}, when the ice first closed the bay.",
                when("day", _now(g) - 5, memory=True),
            ),
        ),
    )
    yield (
        "skip then day",
        False,
        lambda g: (
            NOTHING,
            Draft().say(
                f"Two weeks later, on day {_now(g) + 14} of the long winter, Mara woke early.",
                when("elapsed", 2, "week"),
                when("day", _now(g) + 14),
            ),
        ),
    )
    yield (
        "event dated right",
        False,
        lambda g: (
            NOTHING,
            Draft().say(
                "The Great Fire had burned the harbour two years ago.",
                when("since", 2, "year", "the Great Fire"),
            ),
        ),
    )


def bell(gap: int, due_after: int = 0) -> WorldChanges:
    return WorldChanges(
        setups=(
            SetupSpec(
                "cracked-bell",
                "the cracked bell in the Lighthouse will ring once more",
                PLANT_CHAPTER,
                PLANT_CHAPTER + gap + due_after,
                ("lighthouse",),
            ),
        )
    )


def letter(gap: int) -> WorldChanges:
    planted = PLANT_CHAPTER + gap + 3
    return WorldChanges(
        setups=(
            SetupSpec(
                "sealed-letter",
                "Ilse's sealed letter is opened and read",
                planted,
                planted + 2,
                ("ilse-brandt",),
            ),
        )
    )


def pay(what: str) -> tuple[str, dict[str, Any]]:
    return ("paid_off", {"setup": what})


def setup() -> Iterator[tuple[str, bool, Variant]]:
    yield (
        "due, not shown",
        True,
        lambda g: (
            bell(g),
            Draft().say("Mara trimmed the wick in the Lighthouse and went to bed."),
        ),
    )

    def promised(g: int) -> tuple[WorldChanges, Draft]:
        draft = Draft().say("Mara looked up at the bell tower of the Lighthouse.")
        draft.payoff.append("cracked-bell")
        return bell(g, due_after=2), draft

    yield "promised, not shown", True, promised
    yield (
        "paid before planted",
        True,
        lambda g: (
            letter(g),
            Draft().say(
                "Mara broke the seal of Ilse's letter and read it at last.", pay("sealed-letter")
            ),
        ),
    )
    yield (
        "paid on time",
        False,
        lambda g: (
            bell(g),
            Draft().say(
                "The cracked bell of the Lighthouse rang once, and the whole town fell silent.",
                pay("cracked-bell"),
            ),
        ),
    )
    yield (
        "not yet due",
        False,
        lambda g: (
            bell(g, due_after=3),
            Draft().say("Mara looked up at the bell tower of the Lighthouse."),
        ),
    )
    yield (
        "paid by description",
        False,
        lambda g: (
            bell(g),
            Draft().say(
                "The cracked bell rang once more over the Lighthouse.",
                pay("the cracked bell rings once more"),
            ),
        ),
    )


KINDS: dict[str, Callable[[], Iterator[tuple[str, bool, Variant]]]] = {
    "life": life,
    "location": location,
    "name": name,
    "attribute": attribute,
    "knowledge": knowledge,
    "custody": custody,
    "time": story_time,
    "setup": setup,
}


def cases(gaps: tuple[int, ...], per_kind: int | None = None) -> list[Case]:
    """Every planted case at every gap; with ``per_kind``, the first that many
    contradictions and as many look-alikes of each kind (a sample for slow models)."""
    out: list[Case] = []
    for kind, variants in KINDS.items():
        chosen = list(variants())
        if per_kind is not None:
            chosen = [v for v in chosen if v[1]][:per_kind] + [v for v in chosen if not v[1]][
                :per_kind
            ]
        for variant, contradiction, build in chosen:
            for gap in gaps:
                planted, draft = build(gap)
                out.append(Case(kind, variant, contradiction, gap, planted, draft))
    return out


@dataclass(frozen=True)
class Outcome:
    """What the rules reported for one case."""

    case: Case
    findings: tuple[Finding, ...]
    claims: ChapterClaims | None = None
    """The claims the rules were given (``None``: the model gave no usable answer)."""

    @property
    def kept(self) -> bool:
        """Whether the claims kept every part the case's own claims have (a presence, an
        item, a time marker...), however they worded it."""
        if self.claims is None:
            return False
        wanted = {part for part, items in self.case.draft.claims.items() if items}
        return all(getattr(self.claims, part) for part in wanted)

    @property
    def loss(self) -> str:
        """Where a model's reading lost a contradiction the rules would have found with
        perfect claims: no usable answer, a part of the claims left empty, claims whose
        quotes are not in the draft, or claims that say something else (another name,
        place, value, or ``memory`` set on a present event)."""
        if self.claims is None:
            return "no answer"
        text = self.case.draft.text()
        wanted = [part for part, items in self.case.draft.claims.items() if items]
        if not all(getattr(self.claims, part) for part in wanted):
            return "part left empty"
        quoted = [
            claim
            for part in wanted
            for claim in getattr(self.claims, part)
            if locate(text, claim.quote) is not None
        ]
        if not quoted:
            return "quote not in draft"
        return "claim says otherwise"

    def dump(self) -> dict[str, Any]:
        """The case, the claims read and the findings, as one JSON object."""
        return {
            "kind": self.case.kind,
            "variant": self.case.variant,
            "gap": self.case.gap,
            "contradiction": self.case.contradiction,
            "found": self.found,
            "false_alarm": self.false_alarm,
            "draft": self.case.draft.text(),
            "expected": self.case.draft.chapter_claims().model_dump(exclude_defaults=True),
            "claims": None
            if self.claims is None
            else self.claims.model_dump(exclude_defaults=True),
            "findings": [
                {"kind": f.kind, "severity": f.severity, "problem": f.problem, "quote": f.quote}
                for f in self.findings
            ],
        }

    @property
    def majors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "major"]

    @property
    def found(self) -> bool:
        return any(f.kind == self.case.kind for f in self.majors)

    @property
    def false_alarm(self) -> bool:
        return not self.case.contradiction and bool(self.majors)


async def build_world(world: WorldMemory, novel_id: str, case: Case) -> None:
    """Record the seed, the planted fact and the chapters up to the tested one."""
    await world.apply(novel_id, 0, seed())
    for chapter in range(PLANT_CHAPTER, case.chapter):
        batch = filler_chapter(chapter)
        if chapter == PLANT_CHAPTER:
            planted = case.planted
            batch = WorldChanges(
                entities=planted.entities,
                facts=(*batch.facts, *planted.facts),
                ended=planted.ended,
                setups=planted.setups,
                paid_off=planted.paid_off,
                renames=planted.renames,
            )
        result = await world.apply(novel_id, chapter, batch)
        if result.rejected:
            raise RuntimeError(f"{case.kind}/{case.variant}: world refused {result.rejected}")


Reader = Callable[[Case, WorldSnapshot, ChapterBeats], Awaitable[ChapterClaims | None]]
"""How a case's claims are read: perfect (the case's own) or by a model."""


async def perfect(case: Case, snapshot: WorldSnapshot, beats: ChapterBeats) -> ChapterClaims:
    """The case's own claims: what the draft states."""
    return case.draft.chapter_claims()


def model_reader(gateway: ModelGateway) -> Reader:
    """Claims read from the draft by the gateway's reviewer model, as in a book."""

    async def read(
        case: Case, snapshot: WorldSnapshot, beats: ChapterBeats
    ) -> ChapterClaims | None:
        try:
            read = await read_draft(
                gateway,
                ClaimsInput(
                    chapter=case.chapter,
                    beats=beats,
                    draft=case.draft.text(),
                    world=world_brief(snapshot, focus=["Mara Venn", "the Lighthouse"]),
                ),
            )
        except ScribeError as exc:
            print(f"  {case.kind}/{case.variant} gap {case.gap}: {exc}", file=sys.stderr)
            return None
        if read.unread is None:
            return read.claims
        print(f"  {case.kind}/{case.variant} gap {case.gap}: {read.unread}", file=sys.stderr)
        # Parts read are kept, as in a book; with nothing read the case has no answer.
        nothing = ChapterClaims(summary=read.claims.summary)
        return None if read.claims == nothing else read.claims

    return read


async def run_case(world: WorldMemory, case: Case, reader: Reader | None = None) -> Outcome:
    """Build the case's world, read the draft's claims and check them."""
    novel_id = str(uuid.uuid4())
    await build_world(world, novel_id, case)
    snapshot = await world.world_as_of(novel_id, case.chapter)
    beats = ChapterBeats(
        chapter=case.chapter,
        title="Test",
        pov="Mara Venn",
        location="the Lighthouse",
        characters=["Mara Venn"],
        beats=[{"summary": "Mara keeps the light."}],
        payoff=case.draft.payoff,
    )
    claims = await (reader or perfect)(case, snapshot, beats)
    if claims is None:
        return Outcome(case, (), None)
    text = case.draft.text()
    findings = check_claims(text, claims, snapshot, case.chapter, beats)
    for finding in findings:
        if finding.quote not in text:
            raise RuntimeError(f"{case.kind}/{case.variant}: quote not in draft: {finding}")
    return Outcome(case, tuple(findings), claims)


async def run(
    gaps: tuple[int, ...], reader: Reader | None = None, per_kind: int | None = None
) -> list[Outcome]:
    """Every case through the SQL world memory on a temporary SQLite file."""
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite+aiosqlite:///{Path(tmp) / 'world.sqlite3'}")
        world = SqlWorldMemory(engine)
        try:
            await world.setup()
            outcomes: list[Outcome] = []
            for case in cases(gaps, per_kind):
                outcomes.append(await run_case(world, case, reader))
                if reader is not None:
                    print(f"  {len(outcomes)} cases read", file=sys.stderr, flush=True)
            return outcomes
        finally:
            await world.close()
            await engine.dispose()


def report(
    outcomes: list[Outcome], gaps: tuple[int, ...], *, reader_mode: bool = False
) -> dict[str, Any]:
    """Recall per kind and gap, false alarms per kind; printed as tables. With claims
    read by a model (``reader_mode``), also where the reading lost each missed case."""
    recall: dict[str, dict[int, tuple[int, int]]] = defaultdict(dict)
    alarms: dict[str, tuple[int, int]] = {}
    for kind in CONTRADICTION_KINDS:
        for gap in gaps:
            planted = [o for o in outcomes if o.case.kind == kind and o.case.gap == gap]
            hits = [o for o in planted if o.case.contradiction]
            recall[kind][gap] = (sum(o.found for o in hits), len(hits))
        legit = [o for o in outcomes if o.case.kind == kind and not o.case.contradiction]
        alarms[kind] = (sum(o.false_alarm for o in legit), len(legit))
    header = (
        "kind        " + "".join(f"  gap {g:<3} " for g in gaps) + "  false alarms  claims kept"
    )
    print(header)
    print("-" * len(header))
    for kind in CONTRADICTION_KINDS:
        cells = "".join(
            f"  {found:>2}/{total:<2} {found / total if total else 0:4.2f}"
            for found, total in (recall[kind][g] for g in gaps)
        )
        fa, legit_total = alarms[kind]
        mine = [o for o in outcomes if o.case.kind == kind]
        kept = f"{sum(o.kept for o in mine)}/{len(mine)}"
        print(f"{kind:<12}{cells}  {fa:>2}/{legit_total:<10} {kept}")
    found = sum(o.found for o in outcomes if o.case.contradiction)
    planted_total = sum(1 for o in outcomes if o.case.contradiction)
    false_alarms = sum(o.false_alarm for o in outcomes)
    legit_total = sum(1 for o in outcomes if not o.case.contradiction)
    print(
        f"\nrecall {found}/{planted_total} = {found / planted_total:.3f}; false alarms "
        f"{false_alarms}/{legit_total} = {false_alarms / legit_total:.3f}"
    )
    missed = [o for o in outcomes if o.case.contradiction and not o.found]
    noisy = [o for o in outcomes if o.false_alarm]
    losses: dict[str, dict[str, int]] = {}
    if reader_mode:
        for o in missed:
            row = losses.setdefault(o.case.kind, {})
            row[o.loss] = row.get(o.loss, 0) + 1
        causes = ("no answer", "part left empty", "quote not in draft", "claim says otherwise")
        print("\nwhere the reading lost the missed contradictions")
        print("kind        " + "".join(f"  {c:>20}" for c in causes))
        for kind in CONTRADICTION_KINDS:
            row = losses.get(kind, {})
            print(f"{kind:<12}" + "".join(f"  {row.get(c, 0):>20}" for c in causes))
    for label, group in (("missed", missed), ("false alarm", noisy)):
        for o in group:
            detail = "; ".join(f"{f.kind}: {f.problem}" for f in o.majors) or "no finding"
            print(f"{label}: {o.case.kind}/{o.case.variant} gap {o.case.gap}: {detail}")
    return {
        "recall": {k: {str(g): list(v) for g, v in row.items()} for k, row in recall.items()},
        "false_alarms": {k: list(v) for k, v in alarms.items()},
        "found": found,
        "planted": planted_total,
        "false_alarm_count": false_alarms,
        "legit": legit_total,
        "losses": losses,
    }


async def run_model(args: argparse.Namespace, gaps: tuple[int, ...]) -> list[Outcome]:
    """The cases with claims read by a real model (a local llama-server unless a URL is
    given)."""
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        if args.llm_url:
            url, model = args.llm_url, args.model
        else:
            running = llama.start_model(Path(tmp), args.model, context=args.context)
            stack.callback(running.stop)
            url, model = running.url, str(running.extra["model"])
        settings = load_settings(
            data_dir=Path(tmp) / "data",
            model=model,
            base_url=url,
            api_key="no-key",
            context_window=args.context,
            max_tokens=1500,
            temperature=0.0,
            model_timeout_s=600.0,
        )
        gateway = build_gateway(
            {a: settings.model_for(a) for a in AGENTS},
            settings.retry,
            split_answers=["reviewer"] if args.split else (),
        )
        return await run(gaps, model_reader(gateway), args.per_kind)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("rules", "model"), default="rules")
    parser.add_argument("--gaps", help="default: 1,5,20 (rules), 1 (model)")
    parser.add_argument("--model", default="qwen15", help="model mode: a model of llama.py")
    parser.add_argument("--llm-url", help="model mode: an OpenAI-compatible /v1 URL instead")
    parser.add_argument("--context", type=int, default=8192)
    parser.add_argument(
        "--split",
        action="store_true",
        help="model mode: read the claims in three parts (SCRIBE_SPLIT_ANSWERS)",
    )
    parser.add_argument(
        "--per-kind",
        type=int,
        help="only the first N contradictions and N look-alikes of each kind",
    )
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument(
        "--dump", help="also write each case (draft, expected and read claims, findings) here"
    )
    args = parser.parse_args()
    default_gaps = "1,5,20" if args.mode == "rules" else "1"
    gaps = tuple(int(g) for g in (args.gaps or default_gaps).split(","))
    started = time.perf_counter()
    if args.mode == "rules":
        outcomes = asyncio.run(run(gaps, per_kind=args.per_kind))
        label = "rules (perfect claims)"
    else:
        outcomes = asyncio.run(run_model(args, gaps))
        label = f"model (claims read by {args.model}{', in three parts' if args.split else ''})"
    elapsed = time.perf_counter() - started
    print(f"mode: {label}; {len(outcomes)} cases in {elapsed:.1f} s\n")
    figures = report(outcomes, gaps, reader_mode=args.mode == "model")
    figures["mode"] = args.mode
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    if args.dump:
        lines = (json.dumps(o.dump(), ensure_ascii=False) for o in outcomes)
        Path(args.dump).write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
