"""Offline generators for the planning tasks: story plan, world seed and chapter beats.

The cast (names, places, item, faction) is derived from the premise alone, so the plan
and the world seed name the same people even though they are separate requests.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from nodes.llm.names import (
    DEAD_STATUSES,
    EYE_COLOURS,
    FIRST_NAMES,
    NICKNAMES,
    PLACE_ROOTS,
    PLACE_SUFFIXES,
    STOPWORDS,
    SURNAMES,
    TITLE_ADJECTIVES,
    TITLE_NOUNS,
    GenreKit,
    article,
    infer_genre,
    kit_for,
    mentions,
    nouns_in,
    occupation_hint,
    proper_names,
    seeded_rng,
    short_name,
    slug,
)
from nodes.schemas import (
    Beat,
    BeatsInput,
    ChapterBeats,
    ChapterOutline,
    CharacterBrief,
    CharacterSeed,
    PlaceBrief,
    PlaceSeed,
    PlannedEvent,
    RelationSeed,
    SetupBrief,
    SetupSeed,
    StoryBible,
    StoryPlan,
    StoryPlanInput,
    WorldSeed,
    WorldSeedInput,
)

_TRAITS = (
    "never forgets a debt",
    "laughs too loudly when afraid",
    "keeps every promise and regrets half of them",
    "trusts maps more than people",
    "speaks softly and holds grudges for years",
    "has buried more friends than they admit",
    "cannot leave a locked door alone",
    "notices everything and says little",
)


@dataclass(frozen=True)
class Cast:
    """The people, places and props of a book, fixed by its premise."""

    hero: str
    rival: str
    ally: str
    mentor: str | None
    sibling: str | None
    places: tuple[tuple[str, str], ...]
    """(name, description) of the 3-4 locations; the first is the hero's home."""
    factions: tuple[tuple[str, str], ...]
    items: tuple[tuple[str, str], ...]
    occupations: tuple[str, ...]
    """One occupation per character, in the order hero, rival, ally, mentor, sibling."""

    @property
    def characters(self) -> list[tuple[str, str]]:
        """(name, role) of every character, protagonist first."""
        roles = [(self.hero, "protagonist"), (self.rival, "antagonist"), (self.ally, "ally")]
        if self.mentor:
            roles.append((self.mentor, "mentor"))
        if self.sibling:
            roles.append((self.sibling, "sibling"))
        return roles

    @property
    def guide(self) -> str:
        """The mentor if there is one, else the ally: whoever advises the hero."""
        return self.mentor or self.ally


def cast_for(premise: str, kit: GenreKit) -> Cast:
    """The deterministic cast of a premise in a genre."""
    rng = seeded_rng("cast", premise.strip(), kit.genre)
    people, premise_places = proper_names(premise)
    used_first = {p.split()[0] for p in people}
    firsts = [n for n in FIRST_NAMES if n not in used_first]
    rng.shuffle(firsts)
    lasts = list(SURNAMES)
    rng.shuffle(lasts)

    def invent() -> str:
        return f"{firsts.pop()} {lasts.pop()}"

    count = 3 + rng.randrange(3)
    names = list(people[:count])
    while len(names) < count:
        names.append(invent())
    roots = list(PLACE_ROOTS)
    rng.shuffle(roots)
    suffixes = list(PLACE_SUFFIXES)
    templates = list(kit.locations)
    rng.shuffle(templates)
    places: list[tuple[str, str]] = []
    for i, name in enumerate(premise_places[:2]):
        places.append((name, templates[i % len(templates)][1]))
    wanted = 3 + rng.randrange(2)
    for template, description in templates[len(places) :]:
        if len(places) >= wanted:
            break
        name = template.format(root=roots.pop(), suffix=rng.choice(suffixes))
        places.append((name, description))
    factions = [
        (t.format(root=roots.pop(), suffix=rng.choice(suffixes)), d)
        for t, d in rng.sample(list(kit.factions), 1 + rng.randrange(2))
    ]
    items = rng.sample(list(kit.items), 1 + rng.randrange(2))
    occupations = [occupation_hint(premise, n) or rng.choice(kit.occupations) for n in names]
    return Cast(
        hero=names[0],
        rival=names[1],
        ally=names[2],
        mentor=names[3] if len(names) > 3 else None,
        sibling=names[4] if len(names) > 4 else None,
        places=tuple(places),
        factions=tuple(factions),
        items=tuple(items),
        occupations=tuple(occupations),
    )


# --- story plan ------------------------------------------------------------------------

_PHASE_TITLES: dict[str, tuple[str, ...]] = {
    "opening": ("{home}", "Ordinary Hours", "The Quiet Before", "Morning at {home}"),
    "inciting": ("The First Move", "A Door Opens", "Leaving {home}", "The Summons"),
    "midpoint": ("The Turn", "What Lies Beneath", "Reversal at {place}", "The Other Side"),
    "crisis": ("Everything Lost", "The Long Night", "Ashes at {place}", "The Breaking"),
    "climax": ("Reckoning at {place}", "The Last Stand", "{rival_short}", "What Was Owed"),
    "resolution": ("Afterwards", "The Way Home", "What Remains", "Return to {home}"),
    "complication": (
        "Crossroads", "A Debt Called In", "False Light", "Salt in the Wound", "The {item}",
        "Strangers at {place}", "Bad Bargains", "Night Roads", "Small Mercies", "Old Wounds",
        "The Narrow Way", "Signals", "Thin Ice", "Kept Promises", "Under {place}", "Fault Lines",
    ),
}  # fmt: skip

_COMPLICATIONS: tuple[str, ...] = (
    "At {place}, {hero} finds a lead that points back toward {rival}, but following it "
    "costs {ally} dearly.",
    "{guide} warns {hero} away from {place}; {hero} goes anyway and learns how far the "
    "{faction} will go to stay hidden.",
    "A bargain with {rival} buys time at the price of trust, and {ally} begins to doubt {hero}.",
    "{hero} and {ally} are separated at {place} and must each survive a night alone.",
    "An old debt surfaces in {place}: someone {hero} wronged years ago wants payment.",
    "The {item} reveals part of its purpose, and {hero} begins to understand why {rival} wants it.",
    "A false trail leads {hero} into {place}, where the {faction} is already waiting.",
    "{hero} wins a small victory at {place}, but the cost comes due before morning.",
    "{guide} finally tells part of the truth about {rival}, and it changes what {hero} is "
    "fighting for.",
    "Trapped at {place} by forces beyond their control, {hero} and {ally} have to settle an "
    "old argument.",
    "{rival} strikes at the people {hero} left behind, and {hero} must choose between "
    "pursuit and protection.",
    "A stranger at {place} offers {hero} help that seems too convenient to trust.",
)

_TAILS: tuple[str, ...] = (
    "By nightfall, {ally} has made a choice {hero} will not like.",
    "The {item} grows heavier with every mile.",
    "Word of it reaches {rival} before morning.",
    "{guide} sends a warning that arrives too late.",
    "It costs {hero} a friend, or something close to one.",
    "Somewhere in {other_place}, the {faction} takes note.",
    "The weather turns, and so does the mood of the company.",
    "{hero} begins to suspect that the map they have been following is wrong.",
    "An old promise is broken to keep a new one.",
    "Nothing goes to plan, and {hero} learns more from that than from any success.",
)


def _phases(n: int) -> list[str]:
    """The dramatic function of each of ``n`` chapters."""
    if n == 1:
        return ["whole"]
    if n == 2:
        return ["opening", "climax"]
    slots: dict[int, str] = {1: "opening", n: "resolution", n - 1: "climax"}
    for chapter, phase in ((2, "inciting"), ((n + 1) // 2, "midpoint"), (n - 2, "crisis")):
        if 1 <= chapter <= n and chapter not in slots:
            slots[chapter] = phase
    return [slots.get(i, "complication") for i in range(1, n + 1)]


_COMMON_OPENERS = STOPWORDS | {"everything", "nothing", "someone", "something", "everyone"}


def _lower_first(text: str) -> str:
    """``text`` with its first letter lowered, unless it starts with a proper name."""
    first = text.split(" ", 1)[0].strip(",;:")
    if first.lower() in _COMMON_OPENERS:
        return text[:1].lower() + text[1:]
    return text


def _lower_unless_name(text: str, names: list[str]) -> str:
    """Lower the first letter unless the text opens with a name from ``names``."""
    first = text.split(" ", 1)[0].strip(",;:'")
    if not first or first in FIRST_NAMES or any(n.split()[0] == first for n in names if n):
        return text
    if first.lower() not in _COMMON_OPENERS and first[1:].lower() != first[1:]:
        return text
    return text[:1].lower() + text[1:]


def _clause(premise: str, hero: str | None = None) -> str:
    """The premise as a clause: first sentence, no final stop, lowered first word.

    "A lighthouse keeper named Mara Venn discovers..." becomes "Mara Venn discovers...",
    because the sentence around it already says what Mara does.
    """
    first = re.split(r"(?<=[.!?])\s+", premise.strip())[0].rstrip(".!? ")
    if hero:
        first = re.sub(
            rf"^(?:a|an|the)\s+[a-z][a-z -]{{2,40}}?\s+(?:named|called)\s+(?={re.escape(hero)})",
            "",
            first,
            flags=re.IGNORECASE,
        )
    return _lower_first(first[:300])


def _sentences(text: str) -> list[str]:
    """Sentences of ``text`` (a simple split on terminal punctuation)."""
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s.strip()]


def _truncate(text: str, limit: int) -> str:
    """``text`` cut at a word boundary to at most ``limit`` characters."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0].rstrip(",;:")
    return cut + "…"


def _title_case(word: str) -> str:
    return word[:1].upper() + word[1:]


def story_plan(inp: StoryPlanInput) -> StoryPlan:
    """A bible and an outline of exactly ``inp.chapters`` chapters for the premise."""
    premise = inp.premise.strip() or "A stranger arrives in a town with a secret."
    genre = (inp.genre or "").strip() or infer_genre(premise)
    kit = kit_for(genre)
    cast = cast_for(premise, kit)
    # The base plan ignores the notes so a revision changes only what the notes ask for.
    rng = seeded_rng("plan", premise, genre, inp.chapters)
    hero_short = short_name(cast.hero)
    nouns = nouns_in(premise) or ["secret", "journey"]
    home = cast.places[0][0]
    item = cast.items[0][0]
    title_options = [
        f"The {_title_case(nouns[0])} of {home}",
        f"The Last {_title_case(nouns[0])}",
        f"{hero_short} and the {item}",
        f"A {_title_case(nouns[-1])} for {hero_short}",
    ]
    if len(nouns) > 1:
        title_options.append(f"{_title_case(nouns[0])} and {_title_case(nouns[1])}")
    title = rng.choice(title_options)
    goal, stakes = rng.choice(kit.goals), rng.choice(kit.stakes)
    logline = (
        f"{_clause(premise)[:1].upper()}{_clause(premise)[1:]}. With {cast.rival} closing in, "
        f"{cast.hero} must {goal}, or {stakes}."
    )
    bible = StoryBible(
        title=title,
        logline=_truncate(logline, 600),
        genre=genre,
        tone=rng.choice(kit.tones),
        point_of_view=f"close third person, past tense, following {cast.hero}",
        themes=rng.sample(list(kit.themes), 2 + rng.randrange(3)),
    )
    outline = _outline(inp.chapters, cast, kit, premise, goal, stakes, rng)
    plan = StoryPlan(bible=bible, outline=outline)
    if inp.notes and inp.notes.strip():
        plan = _apply_notes(plan, inp.notes.strip())
    return plan


def _outline(
    n: int,
    cast: Cast,
    kit: GenreKit,
    premise: str,
    goal: str,
    stakes: str,
    rng: random.Random,
) -> list[ChapterOutline]:
    """The chapter outline following a fixed dramatic arc stretched to ``n`` chapters."""
    n = max(1, n)
    places = [p for p, _ in cast.places]
    home, far = places[0], places[-1]
    faction = cast.factions[0][0]
    item = cast.items[0][0]
    slots = {
        "hero": cast.hero,
        "rival": cast.rival,
        "ally": cast.ally,
        "guide": cast.guide,
        "faction": faction,
        "item": item,
        "home": home,
        "rival_short": short_name(cast.rival),
    }
    texts = {
        "opening": f"In {home}, {cast.hero} keeps to the careful routines of "
        f"{article(cast.occupations[0])}, until everything changes: "
        f"{_clause(premise, cast.hero)}. "
        f"{cast.ally} is the only one who notices that something is wrong.",
        "inciting": f"{cast.rival} makes the first move, and {cast.hero} can no longer "
        f"pretend nothing has changed. With {cast.ally} at their side, {cast.hero} sets out "
        f"for {places[1]} to {goal}.",
        "midpoint": f"At {{place}}, everything turns: {cast.hero} discovers that "
        f"{rng.choice(kit.reversals)}. The goal was never what it seemed, and {cast.ally} "
        "has to choose a side.",
        "crisis": f"Everything {cast.hero} has built falls apart. {cast.guide} is silent, "
        f"{{place}} has fallen to the {faction}, and {cast.hero} must decide what they are "
        "willing to lose.",
        "climax": f"{cast.hero} confronts {cast.rival} at {far}. The {item} decides the "
        f"outcome, and every promise made along the way comes due; if {cast.hero} fails, "
        f"{stakes}.",
        "resolution": f"In the aftermath, {cast.hero} returns to {home}, changed. What was "
        f"lost is counted, and what remains is enough to begin again.",
    }
    titles_used: set[str] = set()
    complications = list(_COMPLICATIONS)
    rng.shuffle(complications)
    outline: list[ChapterOutline] = []
    for number, phase in enumerate(_phases(n), start=1):
        place = places[(number + 1) % len(places)] if number > 1 else home
        fill = {**slots, "place": place}
        if phase == "whole":
            summary = " ".join(
                (texts["opening"], texts["climax"], texts["resolution"].replace("{place}", far))
            )
            title_pool = _PHASE_TITLES["climax"] + _PHASE_TITLES["opening"]
        elif phase == "complication":
            cycle, index = divmod(number - 1, len(complications))
            summary = complications[index].format(**fill)
            if cycle:
                # Long books reuse the complications; a different turn keeps each distinct.
                tail = _TAILS[(cycle - 1) % len(_TAILS)]
                summary += " " + tail.format(**fill, other_place=places[cycle % len(places)])
            title_pool = _PHASE_TITLES["complication"]
        else:
            summary = texts[phase].replace("{place}", place)
            if phase == "climax" and n == 2:
                summary += " " + texts["resolution"]
            title_pool = _PHASE_TITLES[phase]
        options = [t.format(**fill) for t in title_pool]
        fresh = [t for t in options if t not in titles_used]
        if not fresh:
            # Long books outrun the stock titles; combine words until one is new.
            combos = [f"The {a} {b}" for a in TITLE_ADJECTIVES for b in TITLE_NOUNS]
            fresh = [t for t in combos if t not in titles_used] or [f"Chapter {number}"]
        title = rng.choice(fresh)
        titles_used.add(title)
        outline.append(ChapterOutline(number=number, title=title, summary=_truncate(summary, 1200)))
    return outline


_TITLE_NOTE = re.compile(
    r"\b(?:title|call\s+it|call\s+the\s+(?:book|novel)|name\s+it|rename(?:\s+it)?)\b"
    r"[^\"\u201c]{0,40}[\"\u201c]([^\"\u201d]{2,120})[\"\u201d]",
    re.IGNORECASE,
)
_CHAPTER_NOTE = re.compile(r"\bchapter\s+(\d+)\b", re.IGNORECASE)


def _apply_notes(plan: StoryPlan, notes: str) -> StoryPlan:
    """Weave the author's notes into the plan: title, logline and chapter summaries."""
    bible = plan.bible
    title_match = _TITLE_NOTE.search(notes)
    title = title_match.group(1).strip() if title_match else bible.title
    directions = [d for d in _sentences(notes) if not _TITLE_NOTE.search(d)]
    logline = bible.logline
    if directions:
        first = _soft_lower(directions[0].rstrip(".!? "))
        logline = _truncate(f"{logline} This version follows the author's direction: {first}.", 600)
    outline = [c.model_copy() for c in plan.outline]
    n = len(outline)
    for i, direction in enumerate(directions):
        match = _CHAPTER_NOTE.search(direction)
        if match and 1 <= int(match.group(1)) <= n:
            index = int(match.group(1)) - 1
        else:
            # Spread unplaced notes from the middle of the book outwards.
            index = (n // 2 + i) % n
        entry = outline[index]
        text = _soft_lower(direction.rstrip(".!? "))
        summary = _truncate(f"{entry.summary} Revised per the author's note: {text}.", 1200)
        outline[index] = entry.model_copy(update={"summary": summary})
    return StoryPlan(
        bible=bible.model_copy(update={"title": title[:200], "logline": logline}),
        outline=outline,
    )


def _soft_lower(text: str) -> str:
    """Lower the first letter unless the text opens with a name ("Mara should...")."""
    first = text.split(" ", 1)[0]
    if first in FIRST_NAMES or (first[:1].isupper() and first[1:2].isupper()):
        return text
    people, _ = proper_names(text)
    if any(text.startswith(p) for p in people):
        return text
    return text[:1].lower() + text[1:]


# --- world seed -----------------------------------------------------------------------


def world_seed(inp: WorldSeedInput) -> WorldSeed:
    """The world before chapter 1: the premise's cast, places, factions, items and rules."""
    kit = kit_for(inp.bible.genre)
    cast = cast_for(inp.premise.strip(), kit)
    rng = seeded_rng("seed", inp.premise.strip(), kit.genre)
    n = max(1, len(inp.outline))
    places = [name for name, _ in cast.places]
    factions = [PlaceSeed(name=name, description=d) for name, d in cast.factions]
    homes = {
        "protagonist": places[0],
        "antagonist": places[-1],
        "ally": places[0],
        "mentor": places[1 % len(places)],
        "sibling": places[0],
    }
    characters: list[CharacterSeed] = []
    nicknames = list(NICKNAMES)
    rng.shuffle(nicknames)
    for (name, role), occupation in zip(cast.characters, cast.occupations, strict=True):
        aliases = [short_name(name)] if len(name.split()) > 1 else []
        if role in {"antagonist", "mentor"} and nicknames:
            aliases.append(nicknames.pop())
        where = homes[role]
        detail = {
            "protagonist": f"The protagonist: {article(occupation)} from {where} who "
            f"{rng.choice(_TRAITS)}.",
            "antagonist": f"The antagonist: {article(occupation)} tied to the {factions[0].name}, "
            f"who {rng.choice(_TRAITS)}.",
            "ally": f"{short_name(cast.hero)}'s closest ally, {article(occupation)} who "
            f"{rng.choice(_TRAITS)}.",
            "mentor": f"{article(occupation).capitalize()} who taught "
            f"{short_name(cast.hero)} everything once, and is hiding why.",
            "sibling": f"{short_name(cast.hero)}'s younger sibling, {article(occupation)} with "
            "ambitions of their own.",
        }[role]
        characters.append(
            CharacterSeed(
                name=name,
                aliases=aliases,
                role=role,
                description=detail,
                fixed={"species": rng.choice(kit.species), "eye_colour": rng.choice(EYE_COLOURS)},
                mutable={"status": "alive", "occupation": occupation},
                location=where,
            )
        )
    relationships = [
        RelationSeed(subject=cast.ally, type="ally_of", object=cast.hero),
        RelationSeed(subject=cast.rival, type="rival_of", object=cast.hero),
        RelationSeed(subject=cast.rival, type="member_of", object=factions[0].name),
    ]
    if cast.mentor:
        relationships.append(RelationSeed(subject=cast.mentor, type="mentor_of", object=cast.hero))
    if cast.sibling:
        relationships.append(
            RelationSeed(subject=cast.sibling, type="sibling_of", object=cast.hero)
        )
    if len(factions) > 1:
        relationships.append(
            RelationSeed(subject=cast.ally, type="member_of", object=factions[1].name)
        )
    items = [PlaceSeed(name=name, description=d) for name, d in cast.items]
    rules = [
        PlaceSeed(name=name, description=d)
        for name, d in rng.sample(list(kit.rules), 1 + rng.randrange(2))
    ]
    return WorldSeed(
        characters=characters,
        locations=[PlaceSeed(name=name, description=d) for name, d in cast.places],
        factions=factions,
        items=items,
        rules=rules,
        relationships=relationships,
        setups=_setups(kit, cast, n, rng),
    )


def _setups(kit: GenreKit, cast: Cast, n: int, rng: random.Random) -> list[SetupSeed]:
    """1-3 set-ups planted early and paid off by the climax, all within ``n`` chapters."""
    item = cast.items[0][0]
    rival_short = short_name(cast.rival)
    place = cast.places[-1][0]
    schedule = [
        (1, max(1, n - 1) if n >= 3 else n),
        (min(2, n), (n + 1) // 2 if n >= 5 else n),
        (max(1, n // 3), n),
    ]
    templates = list(kit.setups)
    rng.shuffle(templates)
    setups: list[SetupSeed] = []
    keys: set[str] = set()
    for (key_t, desc_t), (plant, payoff) in zip(templates, schedule[: min(3, n)], strict=False):
        key = key_t.format(item=slug(item, 30), rival=slug(rival_short, 20))
        key = slug(key, 60)
        if key in keys or len(key) < 2:
            continue
        keys.add(key)
        description = desc_t.format(item=item, rival=cast.rival, place=place, hero=cast.hero)
        entities = [e for e in (item, cast.hero, cast.rival, place) if e in description]
        setups.append(
            SetupSeed(
                key=key,
                description=description,
                plant_chapter=plant,
                payoff_chapter=max(plant, payoff),
                entities=entities,
            )
        )
    return setups


# --- chapter beats --------------------------------------------------------------------


def is_alive(character: CharacterBrief) -> bool:
    """False for characters whose status says they died."""
    return character.attributes.get("status", "alive").strip().lower() not in DEAD_STATUSES


def protagonist_of(characters: list[CharacterBrief], bible: StoryBible) -> CharacterBrief | None:
    """The protagonist among living ``characters``: by role, description, logline, order."""
    living = [c for c in characters if is_alive(c)]
    tests: list[Callable[[CharacterBrief], bool]] = [
        lambda c: "protagonist" in c.attributes.get("role", "").lower(),
        lambda c: "protagonist" in c.description.lower(),
        lambda c: mentions(bible.point_of_view, c.name, c.aliases),
        lambda c: mentions(bible.logline, c.name, c.aliases),
    ]
    for test in tests:
        for character in living:
            if test(character):
                return character
    return living[0] if living else None


def _related(a: CharacterBrief, b: CharacterBrief) -> bool:
    """True when either character's relations name the other."""
    return any(mentions(r, b.name, b.aliases) for r in a.relations) or any(
        mentions(r, a.name, a.aliases) for r in b.relations
    )


def _role(character: CharacterBrief) -> str:
    role = character.attributes.get("role", "").lower()
    if role:
        return role
    description = character.description.lower()
    for word in ("antagonist", "ally", "mentor", "sibling", "protagonist"):
        if word in description:
            return word
    return ""


def chapter_beats(inp: BeatsInput) -> ChapterBeats:
    """The plan of one chapter: pov, location, cast, 3-5 beats, set-ups and events."""
    rng = seeded_rng("beats", inp.model_dump(mode="json"))
    world = inp.world
    living = [c for c in world.characters if is_alive(c)]
    hero = protagonist_of(living, inp.bible)
    if hero is None:
        name = cast_for(inp.bible.logline, kit_for(inp.bible.genre)).hero
        hero = CharacterBrief(name=name)
        living = [hero]
    locations = [p for p in world.places if p.kind.lower() == "location"]
    others_all = [c for c in living if c.name != hero.name]
    late = inp.chapter not in (1, inp.chapters)
    pov = hero
    if late and others_all and rng.random() < 0.2:
        allies = [c for c in others_all if _role(c) in {"ally", "sibling", "mentor"}]
        pov = rng.choice(allies or others_all)
    location = _chapter_location(inp, pov, locations, rng)
    others = [c for c in living if c.name != pov.name]
    mentioned = [c for c in others if mentions(inp.outline.summary, c.name, c.aliases)]
    present = [*mentioned, *(c for c in others if c.location == location and c not in mentioned)]
    present = present[:3]
    if not present and others:
        present.append(rng.choice(others))
    elif len(present) < 2 and len(others) > len(present) and rng.random() < 0.5:
        present.append(rng.choice([c for c in others if c not in present]))
    victim = _victim(inp, pov, hero, present, others, rng)
    if victim is not None and victim not in present:
        present.append(victim)

    setups = _setup_moves(inp.world.open_setups, inp.chapter, inp.chapters)
    plant, payoff = setups
    events: list[PlannedEvent] = []
    for character in [pov, *present]:
        if character.location != location:
            events.append(PlannedEvent(kind="move", character=character.name, target=location))
    for setup in plant:
        events.append(PlannedEvent(kind="learn", character=pov.name, target=setup.description))
    meeting = _meeting(pov, present, rng)
    if meeting is not None:
        events.append(PlannedEvent(kind="meet", character=meeting[0].name, target=meeting[1].name))
    if victim is not None:
        events.append(PlannedEvent(kind="death", character=victim.name))

    beats = _beats(inp, pov, location, present, plant, payoff, meeting, victim, rng)
    cast = [pov.name, *(c.name for c in present)]
    return ChapterBeats(
        chapter=inp.chapter,
        title=inp.outline.title,
        pov=pov.name,
        location=location,
        characters=list(dict.fromkeys(cast)),
        beats=beats,
        plant=[s.key for s in plant],
        payoff=[s.key for s in payoff],
        events=events,
    )


def _chapter_location(
    inp: BeatsInput, pov: CharacterBrief, locations: list[PlaceBrief], rng: random.Random
) -> str:
    """Where the chapter happens: named by the outline, else home, else somewhere new."""
    if not locations:
        return pov.location or cast_for(inp.bible.logline, kit_for(inp.bible.genre)).places[0][0]
    summary = inp.outline.summary
    named = [
        (summary.lower().find(p.name.lower()), p.name)
        for p in locations
        if mentions(summary, p.name)
    ]
    if named:
        return min(named)[1]
    names = [p.name for p in locations]
    if inp.chapter == 1 and pov.location in names:
        return pov.location
    elsewhere = [n for n in names if n != pov.location]
    if elsewhere and (pov.location not in names or rng.random() < 0.8):
        return rng.choice(elsewhere)
    return pov.location if pov.location in names else rng.choice(names)


def _victim(
    inp: BeatsInput,
    pov: CharacterBrief,
    hero: CharacterBrief,
    present: list[CharacterBrief],
    others: list[CharacterBrief],
    rng: random.Random,
) -> CharacterBrief | None:
    """Who dies in this chapter, if anyone: one non-pov, non-protagonist near the climax."""
    if inp.chapters < 4 or inp.chapter != inp.chapters - 1:
        return None
    candidates = [c for c in present if c.name not in (pov.name, hero.name)]
    candidates = candidates or [c for c in others if c.name not in (pov.name, hero.name)]
    if not candidates:
        return None
    antagonists = [c for c in candidates if _role(c) == "antagonist"]
    return antagonists[0] if antagonists else rng.choice(candidates)


def _setup_moves(
    setups: list[SetupBrief], chapter: int, chapters: int
) -> tuple[list[SetupBrief], list[SetupBrief]]:
    """(planted, paid off) set-ups of the chapter; overdue ones are paid off late."""
    plant = [s for s in setups if s.plant_chapter == chapter]
    payoff = [
        s
        for s in setups
        if s.payoff_chapter == chapter
        or (s.payoff_chapter < chapter and s.plant_chapter < chapter)
        or (chapter >= chapters and s.plant_chapter < chapter)
    ]
    return plant, payoff


def _meeting(
    pov: CharacterBrief, present: list[CharacterBrief], rng: random.Random
) -> tuple[CharacterBrief, CharacterBrief] | None:
    """A first meeting between two present characters who have no relation yet."""
    people = [pov, *present]
    pairs = [
        (a, b)
        for i, a in enumerate(people)
        for b in people[i + 1 :]
        if not _related(a, b) and a.name != b.name
    ]
    if not pairs or rng.random() < 0.4:
        return None
    return pairs[0]


_ARRIVALS = (
    "{pov} leaves {origin} and travels to {place}, wary of what waits there.",
    "{pov} reaches {place} with the last of the light, having left {origin} in a hurry.",
    "{pov} makes the crossing from {origin} to {place} and arrives tired and watchful.",
)
_STAYS = (
    "At {place}, {pov} takes stock of what has changed since the last time.",
    "{pov} wakes at {place} to news that cannot wait.",
    "{pov} walks the length of {place}, looking for the first thread to pull.",
)
_ENCOUNTERS: dict[str, tuple[str, ...]] = {
    "antagonist": (
        "{pov} and {other} face each other at {place}, and neither gives ground.",
        "{other} finds {pov} at {place} and makes an offer that is a threat in disguise.",
    ),
    "ally": (
        "{pov} and {other} argue at {place} about what to do next, then agree on a plan.",
        "{other} covers for {pov} at {place}, at a cost neither of them mentions.",
    ),
    "": (
        "{pov} presses {other} for answers at {place} and gets half of them.",
        "{other} tells {pov} something at {place} that changes the shape of the day.",
        "{pov} and {other} share a meal at {place} and trade careful truths.",
    ),
}
_PAUSES = (
    "{pov} spends the hours at {place} preparing, and listening to what is not said.",
    "Alone at {place}, {pov} works through the problem until the shape of it is clear.",
)
_HOOKS = (
    "As night falls over {place}, {pov} decides where to go next: {next}.",
    "{pov} leaves {place} knowing the next step, and dreading it: {next}.",
)
_OPEN_HOOKS = (
    "As night falls over {place}, {pov} lies awake, already counting what tomorrow will cost.",
    "{pov} ends the day at {place} with one question answered and two more waiting.",
)
_ENDINGS = (
    "{pov} looks back at {place} and counts what was lost and what remains.",
    "At {place}, {pov} finally rests, and the story of these days comes to its close.",
)


def _beats(
    inp: BeatsInput,
    pov: CharacterBrief,
    location: str,
    present: list[CharacterBrief],
    plant: list[SetupBrief],
    payoff: list[SetupBrief],
    meeting: tuple[CharacterBrief, CharacterBrief] | None,
    victim: CharacterBrief | None,
    rng: random.Random,
) -> list[Beat]:
    """3-5 beats drawn from the outline summary, the encounters and the set-ups."""
    living_names = [pov.name, *(c.name for c in present)]
    dead = [c for c in inp.world.characters if not is_alive(c)]
    fill = {"pov": pov.name, "place": location}

    def cast_of(text: str) -> list[str]:
        named = [c.name for c in [pov, *present] if mentions(text, c.name, c.aliases)]
        return list(dict.fromkeys(named)) or [pov.name]

    def beat(text: str) -> Beat:
        return Beat(summary=_truncate(text, 600), characters=cast_of(text), location=location)

    origin = pov.location
    if origin and origin != location:
        first = beat(rng.choice(_ARRIVALS).format(origin=origin, **fill))
    else:
        first = beat(rng.choice(_STAYS).format(**fill))

    # (priority, beat): lower priorities are dropped first when there are too many.
    middle: list[tuple[int, Beat]] = []
    outline_sentences = [
        s
        for s in _sentences(inp.outline.summary)
        if not any(mentions(s, d.name, d.aliases) for d in dead)
        and not any(
            mentions(s, c.name, c.aliases)
            for c in inp.world.characters
            if c.name not in living_names
        )
    ]
    names = [c.name for c in inp.world.characters] + [p.name for p in inp.world.places]
    for rank, sentence in enumerate(outline_sentences[:2]):
        if mentions(sentence, location):
            text = sentence
        else:
            text = f"At {location}, {_lower_unless_name(sentence, names)}"
        middle.append((4 if rank == 0 else 1, beat(text)))
    if meeting is not None:
        a, b = meeting
        text = (
            f"{a.name} meets {b.name} for the first time at {location}; neither trusts the other."
        )
        middle.append((3, beat(text)))
    elif present:
        other = present[0] if present[0] is not victim else present[-1]
        role = _role(other)
        pool = _ENCOUNTERS.get(role if role in _ENCOUNTERS else "", _ENCOUNTERS[""])
        middle.append((2, beat(rng.choice(pool).format(other=other.name, **fill))))
    if plant:
        planted = _lower_first(" ".join(s.description for s in plant))
        middle.append((5, beat(f"{pov.name} notices something that will matter later: {planted}")))
    if payoff:
        due = "; ".join(_lower_first(s.description.rstrip(". ")) for s in payoff)
        middle.append((5, beat(f"It comes due at {location}: {due}, and {pov.name} acts on it.")))
    if victim is not None:
        text = f"{victim.name} is killed at {location}, and {pov.name} cannot prevent it."
        middle.append((6, beat(text)))

    if inp.next_outline is not None:
        places = [p for p in inp.world.places if p.kind.lower() == "location"]
        ahead = [p.name for p in places if mentions(inp.next_outline.summary, p.name)]
        if ahead and ahead[0] != location:
            last = beat(rng.choice(_HOOKS).format(next=f"on to {ahead[0]}", **fill))
        else:
            last = beat(rng.choice(_OPEN_HOOKS).format(**fill))
    else:
        last = beat(rng.choice(_ENDINGS).format(**fill))
    while len(middle) > 3:
        weakest = min(range(len(middle)), key=lambda i: (middle[i][0], -i))
        middle.pop(weakest)
    beats = [first, *(b for _, b in middle), last]
    if len(beats) < 3:
        beats.insert(1, beat(rng.choice(_PAUSES).format(**fill)))
    # Everyone present takes part in some beat, if only as a witness to the middle one.
    named = {c for b in beats for c in b.characters}
    absent = [c.name for c in present if c.name not in named]
    if absent:
        host = beats[len(beats) // 2]
        host.characters = list(dict.fromkeys([*host.characters, *absent]))
    return beats
