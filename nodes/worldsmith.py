"""The worldsmith: seeds the world before chapter 1 and records what each chapter changed.

Both nodes first retract what their chapter recorded before and then apply the new batch,
so a node replayed after a crash, or re-run after an author's edit, leaves exactly one
set of facts for its chapter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from langgraph.runtime import Runtime

from errors import InvalidInput
from memory.app.port import ChapterVersionRecord
from memory.world.port import (
    ApplyResult,
    EntityKind,
    EntitySpec,
    FactEnd,
    FactSpec,
    Rename,
    SetupSpec,
    WorldChanges,
    WorldSnapshot,
)
from nodes.common import language_of, novel_id_of, progress, slugify
from nodes.context import ScribeContext
from nodes.integrity import (
    BORN_DAY,
    DAY,
    TIMELINE_KEY,
    UNIT_DAYS,
    Finding,
    WorldIndex,
    accepted_changes,
    draft_findings,
    ordered_claims,
    with_accepted,
)
from nodes.llm.gateway import ModelGateway
from nodes.reviewer import read_claims
from nodes.schemas import (
    ChapterBeats,
    ChapterClaims,
    ChapterOutline,
    ItemClaim,
    PlaceSeed,
    PresenceClaim,
    SetupSeed,
    StoryBible,
    TimeClaim,
    TravelClaim,
    WorldCast,
    WorldCastInput,
    WorldLinks,
    WorldLinksInput,
    WorldPlaces,
    WorldSeed,
    WorldSeedInput,
)
from nodes.state import NovelState

SEED_CHAPTER = 0


def setup_problems(setups: list[SetupSeed], chapters: int) -> list[str]:
    """Set-ups must be planted before (or where) they pay off, within the book."""
    return [
        f"set-up {setup.key}: need 1 <= plant_chapter <= payoff_chapter <= {chapters}"
        for setup in setups
        if not 1 <= setup.plant_chapter <= setup.payoff_chapter <= chapters
    ]


def seed_problems(seed: WorldSeed, chapters: int) -> list[str]:
    """Checks a schema cannot express: start locations exist, set-ups fit the book."""
    problems: list[str] = []
    places = {p.name.lower() for p in seed.locations} | {
        a.lower() for p in seed.locations for a in p.aliases
    }
    for character in seed.characters:
        if character.location and character.location.lower() not in places:
            problems.append(f"{character.name}'s location {character.location!r} is not a location")
    return problems + setup_problems(seed.setups, chapters)


def _names(items: list[PlaceSeed]) -> list[str]:
    return list(dict.fromkeys(n for item in items for n in (item.name, *item.aliases)))


SEED_DESCRIPTION_CHARS = 240
"""A seeded entity's description is a sentence or two; its facts accrue chapter by chapter."""


def world_size(chapters: int) -> dict[str, int]:
    """How many of each kind a book of ``chapters`` chapters starts with, at most.

    The world grows with every chapter's facts; seeding a short book with sixteen places
    only makes a slow model write (and the writer read) entities no chapter visits.
    """
    return {
        "locations": min(16, 2 + chapters),
        "factions": min(8, 1 + chapters // 3),
        "items": min(12, 1 + chapters),
        "rules": min(8, 1 + chapters // 3),
        "characters": min(16, 3 + chapters),
        "relationships": min(32, 2 * (3 + chapters)),
        "setups": min(16, max(1, chapters)),
    }


def _sized(chapters: int, *fields: str) -> dict[str, dict[str, Any]]:
    size = world_size(chapters)
    narrowed: dict[str, dict[str, Any]] = {}
    for field in fields:
        narrowed[field] = {"maxItems": size[field]}
        if field in ("locations", "factions", "items", "rules", "characters"):
            narrowed[f"{field}[].description"] = {"maxLength": SEED_DESCRIPTION_CHARS}
    return narrowed


def places_constraints(chapters: int) -> dict[str, dict[str, Any]]:
    """Schema narrowing: a world sized to the book."""
    return _sized(chapters, "locations", "factions", "items", "rules")


def cast_constraints(places: WorldPlaces, chapters: int) -> dict[str, dict[str, Any]]:
    """Schema narrowing: a cast sized to the book, starting at locations of the world,
    in its factions."""
    narrowed = _sized(chapters, "characters")
    narrowed["characters[].location"] = {"enum": _names(places.locations)}
    if places.factions:
        narrowed["characters[].faction"] = {"enum": _names(places.factions)}
    return narrowed


def links_constraints(names: list[str], chapters: int) -> dict[str, dict[str, Any]]:
    """Schema narrowing: links join known names; set-ups fall within the book."""
    return {
        **_sized(chapters, "relationships", "setups"),
        "relationships[].subject": {"enum": names},
        "relationships[].object": {"enum": names},
        "setups[].entities[]": {"enum": names},
        "setups[].plant_chapter": {"minimum": 1, "maximum": chapters},
        "setups[].payoff_chapter": {"minimum": 1, "maximum": chapters},
    }


async def build_seed(models: ModelGateway, book: WorldSeedInput, chapters: int) -> WorldSeed:
    """The world before chapter 1, in three answers: places and things, then the cast
    placed among them, then the relationships and set-ups between the names so far."""
    places = await models.structured(
        "world_places", book, WorldPlaces, constraints=places_constraints(chapters)
    )
    cast = await models.structured(
        "world_cast",
        WorldCastInput(
            **book.model_dump(),
            locations=_names(places.locations),
            factions=_names(places.factions),
        ),
        WorldCast,
        constraints=cast_constraints(places, chapters),
    )
    people = list(dict.fromkeys(c.name for c in cast.characters))
    names = list(
        dict.fromkeys(
            [
                *people,
                *(p.name for group in (places.locations, places.factions) for p in group),
                *(p.name for group in (places.items, places.rules) for p in group),
            ]
        )
    )
    links = await models.structured(
        "world_links",
        WorldLinksInput(**book.model_dump(), characters=people, names=names),
        WorldLinks,
        constraints=links_constraints(names, chapters),
        check=lambda answer: setup_problems(answer.setups, chapters),
        salvage=lambda answer: answer.model_copy(
            update={"setups": [s for s in answer.setups if not setup_problems([s], chapters)]}
        ),
    )
    return mended_seed(
        WorldSeed(characters=cast.characters, **places.model_dump(), **links.model_dump()),
        chapters,
    )


def mended_seed(seed: WorldSeed, chapters: int) -> WorldSeed:
    """A seed whose start locations name no location of its own lose them (the character
    is then nowhere in particular), and whose impossible set-ups are left out."""
    places = {p.name.lower() for p in seed.locations} | {
        a.lower() for p in seed.locations for a in p.aliases
    }
    characters = [
        c
        if not c.location or c.location.lower() in places
        else c.model_copy(update={"location": None})
        for c in seed.characters
    ]
    setups = [s for s in seed.setups if 1 <= s.plant_chapter <= s.payoff_chapter <= chapters]
    return seed.model_copy(update={"characters": characters, "setups": setups})


def seed_to_changes(seed: WorldSeed) -> WorldChanges:
    """The seeded world as one batch of world-memory changes."""
    entities: list[EntitySpec] = []
    facts: list[FactSpec] = []
    keys: dict[str, str] = {}

    def add(kind: EntityKind, item: PlaceSeed) -> None:
        key = slugify(item.name)
        keys[item.name.lower()] = key
        keys.update({a.lower(): key for a in item.aliases})
        entities.append(
            EntitySpec(
                key, kind, item.name, tuple(item.aliases), item.description, dict(item.fixed)
            )
        )

    for kind, items in (
        ("location", seed.locations),
        ("faction", seed.factions),
        ("item", seed.items),
        ("rule", seed.rules),
    ):
        for item in items:
            add(kind, item)  # type: ignore[arg-type]
    taken = {e.key for e in entities}
    for character in seed.characters:
        key = slugify(character.name)
        if key in taken:
            # A small model may give a character the name of a place; the character
            # still needs an entity of its own.
            key = f"{key}-character"
        taken.add(key)
        keys[character.name.lower()] = key
        keys.update({a.lower(): key for a in character.aliases})
        mutable = {"status": "alive", **character.mutable}
        if character.role:
            mutable.setdefault("role", character.role)
        entities.append(
            EntitySpec(
                key,
                "character",
                character.name,
                tuple(character.aliases),
                character.description,
                dict(character.fixed),
                mutable,
            )
        )

    def key_of(name: str) -> str:
        return keys.get(name.strip().lower(), slugify(name))

    for character in seed.characters:
        if character.location:
            facts.append(
                FactSpec(key_of(character.name), "located_in", object=key_of(character.location))
            )
        if character.faction:
            facts.append(
                FactSpec(key_of(character.name), "member_of", object=key_of(character.faction))
            )
    for rel in seed.relationships:
        facts.append(FactSpec(key_of(rel.subject), rel.type, object=key_of(rel.object)))
    setups = tuple(
        SetupSpec(
            s.key,
            s.description,
            s.plant_chapter,
            s.payoff_chapter,
            tuple(key_of(e) for e in s.entities),
        )
        for s in seed.setups
    )
    return WorldChanges(entities=tuple(entities), facts=tuple(facts), setups=setups)


def claims_to_world(
    snapshot: WorldSnapshot, chapter: int, claims: ChapterClaims, draft: str
) -> WorldChanges:
    """What an accepted chapter's claims change in the world, valid from ``chapter``.

    ``snapshot`` is the world before the chapter. Names resolve through it (and through
    the chapter's own new entities and renames); claims are taken in draft order, so a
    character's last place and an item's last holder win. Memories and flashbacks change
    nothing. A fact the draft contradicted without cause is offered as stated and world
    memory refuses it (a fixed attribute) -- the reviewer has reported it already.
    """
    index = WorldIndex.of(snapshot)
    entities: list[EntitySpec] = []
    for item in claims.new_entities:
        key = index.resolve(item.name) or slugify(item.name)
        entities.append(
            EntitySpec(
                key, item.kind, item.name, tuple(item.aliases), item.description, dict(item.fixed)
            )
        )
        index.add_form(item.name, key)
    renames: list[Rename] = []
    for rename in claims.renames:
        renamed = index.resolve(rename.old)
        if renamed is not None:
            renames.append(Rename(renamed, rename.new))
            index.add_form(rename.new, renamed)

    def key_of(name: str | None) -> str | None:
        return index.resolve(name) if name else None

    facts: list[FactSpec] = []
    ended: list[FactEnd] = []
    places: dict[str, tuple[int, str]] = {}
    holders: dict[str, tuple[int, str]] = {}
    for event in ordered_claims(draft, claims):
        claim = event.claim
        if isinstance(claim, PresenceClaim | TravelClaim):
            place = claim.to if isinstance(claim, TravelClaim) else claim.place
            who, where = key_of(claim.character), key_of(place)
            memory = isinstance(claim, PresenceClaim) and claim.memory
            if who and where and not memory:
                places[who] = (event.position, where)
        elif isinstance(claim, ItemClaim) and not claim.memory:
            thing, who = key_of(claim.item), key_of(claim.character)
            if thing and who and (claim.action == "receives" or thing not in holders):
                holders[thing] = (event.position, who)
    for who, (_, where) in places.items():
        facts.append(FactSpec(who, "located_in", object=where))
    for thing, (_, who) in holders.items():
        if index.relation(thing, "held_by") != who:
            facts.append(FactSpec(thing, "held_by", object=who))
    for death in claims.deaths:
        who = key_of(death.character)
        if who:
            facts.append(FactSpec(who, "status", value="dead"))
    for known in claims.knowledge:
        if known.action != "learns":
            continue
        who = key_of(known.character)
        secret = index.secret(known.secret)
        if secret is None:
            # Knowledge the world did not name yet becomes a secret of its own, so who
            # knows it (and from when) is recorded like any other.
            secret = slugify(known.secret)[:60]
            entities.append(
                EntitySpec(secret, "secret", known.secret[:80], description=known.secret)
            )
            index.add_form(known.secret, secret)
        if who:
            facts.append(FactSpec(who, "knows", object=secret))
    for stated in claims.attributes:
        owner = key_of(stated.entity)
        if owner is None:
            continue
        key = owner
        entity = index.entities.get(key)
        attribute = index.stored_name(key, stated.attribute)
        if index.fixed(key, attribute) is not None:
            if stated.cause:
                facts.append(FactSpec(key, attribute, value=stated.value, cause=stated.cause))
        elif stated.permanent and entity is not None:
            entities.append(
                EntitySpec(key, entity.kind, entity.name, fixed={attribute: stated.value})
            )
        else:
            facts.append(FactSpec(key, attribute, value=stated.value))
    facts.extend(_time_facts(index, claims, draft, entities))
    for rel in claims.relationships:
        subject, obj = key_of(rel.subject), key_of(rel.object)
        if subject is None or obj is None:
            continue
        if rel.ended:
            ended.append(FactEnd(subject, rel.type, obj))
        else:
            facts.append(FactSpec(subject, rel.type, object=obj))
    paid = [s.key for s in (index.setup(p.setup) for p in claims.paid_off) if s is not None]
    setups = tuple(
        SetupSpec(p.key, p.description, chapter, max(chapter, p.payoff_chapter))
        for p in claims.planted
    )
    return WorldChanges(
        entities=tuple(entities),
        facts=tuple(facts),
        ended=tuple(ended),
        setups=setups,
        paid_off=tuple(dict.fromkeys(paid)),
        renames=tuple(renames),
    )


def _time_facts(
    index: WorldIndex, claims: ChapterClaims, draft: str, entities: list[EntitySpec]
) -> list[FactSpec]:
    """The story's day at the chapter's end, and birth days of characters whose age the
    chapter states for the first time."""
    now = index.day()
    facts: list[FactSpec] = []
    moved = False
    for event in ordered_claims(draft, claims):
        claim = event.claim
        if not isinstance(claim, TimeClaim) or claim.memory:
            continue
        days = claim.value * UNIT_DAYS[claim.unit]
        if claim.kind == "day":
            now, moved = float(claim.value), True
        elif claim.kind == "elapsed" and now is not None:
            now, moved = now + days, True
        elif claim.kind == "age" and now is not None:
            who = index.resolve(claim.subject, ("character",))
            entity = index.entities.get(who or "")
            if who and entity and index.attribute(who, BORN_DAY) is None:
                born = round(now - days)
                entities.append(
                    EntitySpec(who, "character", entity.name, fixed={BORN_DAY: str(born)})
                )
    if moved and now is not None:
        if TIMELINE_KEY not in index.entities:
            entities.append(EntitySpec(TIMELINE_KEY, "event", "Story time"))
        facts.append(FactSpec(TIMELINE_KEY, DAY, value=f"{now:g}"))
    return facts


async def worldsmith_seed(state: NovelState, runtime: Runtime[ScribeContext]) -> dict[str, Any]:
    """Build the world before chapter 1 and store it in world memory (chapter 0)."""
    ctx = runtime.context
    novel_id = novel_id_of(state)
    chapters = state["chapters"]
    progress(runtime, "worldsmith", "seeding")
    seed = await build_seed(
        ctx.models,
        WorldSeedInput(
            language=language_of(state),
            premise=state["premise"],
            bible=StoryBible(**state["bible"]),
            outline=[ChapterOutline(**c) for c in state["outline"]],
        ),
        chapters,
    )
    await ctx.world.retract_chapter(novel_id, SEED_CHAPTER)
    result = await ctx.world.apply(novel_id, SEED_CHAPTER, seed_to_changes(seed))
    progress(
        runtime,
        "worldsmith",
        "seeded",
        characters=len(seed.characters),
        locations=len(seed.locations),
        setups=len(seed.setups),
        rejected=[r.reason for r in result.rejected],
    )
    return {}


@dataclass(frozen=True)
class RecordedChapter:
    """What :func:`record_chapter_world` read in a chapter and what world memory refused."""

    claims: ChapterClaims
    result: ApplyResult
    findings: tuple[Finding, ...] = ()
    """What the rules found in a text read here (an author's edit); empty when the
    claims were given (the reviewer found and stored them already)."""
    unread: str | None = None
    """Why the model gave no usable claims for a text read here (nothing was recorded)."""


async def record_chapter_world(
    ctx: ScribeContext,
    novel_id: str,
    chapter: int,
    beats: ChapterBeats,
    text: str,
    claims: ChapterClaims | None = None,
    language: str | None = None,
    accepted: Sequence[FactSpec] = (),
) -> RecordedChapter:
    """Redo one chapter's world facts from its text: retract what the chapter recorded
    before, then apply what its claims change, at the chapter.

    ``claims`` are the reviewer's reading of ``text`` when it has one (the accepted
    draft's); otherwise (an author's edit) the text is read now. ``accepted`` are the
    facts of findings the author accepted as deliberate changes. Shared by
    :func:`worldsmith_update` and the author-edit path of the HTTP API, so an edited
    chapter's facts are recomputed exactly as the graph does it.
    """
    # Read the world as it stood before this chapter: a re-run must not see its own facts.
    await ctx.world.retract_chapter(novel_id, chapter)
    snapshot = await ctx.world.world_as_of(novel_id, chapter)
    findings: tuple[Finding, ...] = ()
    unread: str | None = None
    if claims is None:
        read = await read_claims(ctx, chapter, beats, text, snapshot, language)
        claims, unread = read.claims, read.unread
        findings = tuple(
            draft_findings(
                text,
                claims,
                snapshot,
                chapter,
                beats,
                target=ctx.options.words_per_chapter,
                language=language,
            )
        )
    changes = claims_to_world(snapshot, chapter, claims, text)
    extra = tuple(f for f in dict.fromkeys(accepted) if f not in changes.facts)
    result = await ctx.world.apply(novel_id, chapter, replace(changes, facts=changes.facts + extra))
    return RecordedChapter(claims, result, findings, unread)


async def accept_findings(
    ctx: ScribeContext,
    novel_id: str,
    chapter: int,
    beats: ChapterBeats,
    numbers: Sequence[int],
    language: str | None = None,
) -> ChapterVersionRecord:
    """The author accepts findings of a chapter's standing text as deliberate changes.

    The findings numbered ``numbers`` (from 1) are marked accepted on the version, and the
    chapter's world facts are recorded again with what they change, so later chapters
    are checked against the draft's version. InvalidInput (nothing changed) when the text
    was never reviewed or a number is not one of its findings.
    """
    record = await ctx.store.get_chapter(novel_id, chapter)
    version = await ctx.store.get_version(record.current_version_id)
    if version.findings is None or version.claims is None:
        raise InvalidInput(
            f"chapter {chapter}'s text was never checked; it has no findings to accept",
            field="findings",
            chapter=chapter,
        )
    findings = with_accepted(version.findings, numbers, field="findings")
    await ctx.store.save_review(version.id, version.claims, findings)
    await record_chapter_world(
        ctx,
        novel_id,
        chapter,
        beats,
        record.text,
        ChapterClaims.model_validate(version.claims),
        language,
        accepted_changes(findings),
    )
    return await ctx.store.get_version(version.id)


async def worldsmith_update(state: NovelState, runtime: Runtime[ScribeContext]) -> dict[str, Any]:
    """Record what the accepted chapter changed, valid from that chapter."""
    ctx = runtime.context
    novel_id = novel_id_of(state)
    chapter = state["chapter"]
    beats = ChapterBeats(**(state.get("beats") or {}))
    progress(runtime, "worldsmith", "recording", chapter=chapter)
    record = await ctx.store.get_chapter(novel_id, chapter)
    # The reviewer's claims about the accepted text serve here too: no second reading.
    version = await ctx.store.get_version(record.current_version_id)
    stored = ChapterClaims.model_validate(version.claims) if version.claims else None
    recorded = await record_chapter_world(
        ctx,
        novel_id,
        chapter,
        beats,
        record.text,
        stored,
        language_of(state),
        accepted_changes(version.findings),
    )
    claims, result = recorded.claims, recorded.result
    if stored is None:
        # The text was read here (an author's edit at the gate): its findings are kept
        # with it, as the reviewer keeps a draft's.
        await ctx.store.save_review(
            version.id, claims.model_dump(mode="json"), [asdict(f) for f in recorded.findings]
        )
    if recorded.unread is not None:
        progress(runtime, "worldsmith", "claims_unread", chapter=chapter, error=recorded.unread)
    await ctx.store.accept_chapter(
        novel_id, chapter, record.current_version_id, record.title, claims.summary
    )
    keep = ctx.options.recent_summaries
    # An edited or replayed chapter replaces its own summary instead of adding another.
    label = f"Chapter {chapter}: "
    earlier = [s for s in state.get("recent_summaries", []) if not s.startswith(label)]
    summaries = [*earlier, label + claims.summary][-keep:]
    progress(
        runtime,
        "worldsmith",
        "recorded",
        chapter=chapter,
        moves=len(claims.travel),
        deaths=len(claims.deaths),
        paid_off=[p.setup for p in claims.paid_off],
        rejected=[r.reason for r in result.rejected],
    )
    return {"recent_summaries": summaries, "accepted": max(state.get("accepted", 0), chapter)}
