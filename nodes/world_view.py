"""Condense a world snapshot into the brief that prompts carry, and resolve names to keys."""

from __future__ import annotations

import re
from collections.abc import Iterable

from memory.world.port import WorldSnapshot
from nodes.common import slugify
from nodes.schemas import ChapterBeats, CharacterBrief, PlaceBrief, SetupBrief, WorldBrief

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
TIMELINE_KEY = "story-time"
"""The world entity whose ``day`` attribute is the story's present (see nodes/integrity.py)."""

# Prompts stay bounded however large the world grows.
MAX_CHARACTERS = 40
MAX_PLACES = 40


def world_brief(
    snapshot: WorldSnapshot, *, focus: Iterable[str] = (), include_dead: bool = True
) -> WorldBrief:
    """The world at ``snapshot.chapter`` as a prompt-sized brief.

    ``focus`` names or keys come first so they survive the size bound.
    """
    names = {e.key: e.name for e in snapshot.entities}
    wanted = {slugify(f) for f in focus}
    characters: list[CharacterBrief] = []
    places: list[PlaceBrief] = []
    ordered = sorted(snapshot.entities, key=lambda e: (e.key not in wanted, e.introduced_chapter))
    holders = {
        f.subject: names.get(f.object, f.object)
        for f in snapshot.facts
        if f.predicate == "held_by" and f.object is not None
    }
    for entity in ordered:
        if entity.key == TIMELINE_KEY:
            continue
        if entity.kind != "character":
            places.append(
                PlaceBrief(
                    name=entity.name,
                    kind=entity.kind,
                    description=entity.description,
                    held_by=holders.get(entity.key),
                )
            )
            continue
        attributes = snapshot.attributes(entity.key)
        if not include_dead and attributes.get("status") == "dead":
            continue
        location = None
        relations: list[str] = []
        for fact in snapshot.relations(entity.key):
            if fact.subject != entity.key or fact.object is None:
                continue
            target = names.get(fact.object, fact.object)
            if fact.predicate == "located_in":
                location = target
            else:
                relations.append(f"{fact.predicate} {target}")
        characters.append(
            CharacterBrief(
                name=entity.name,
                aliases=list(entity.aliases),
                description=entity.description,
                attributes=attributes,
                location=location,
                relations=relations,
            )
        )
    setups = [
        SetupBrief(
            key=s.key,
            description=s.description,
            plant_chapter=s.planted_chapter,
            payoff_chapter=s.due_chapter,
        )
        for s in snapshot.open_setups()
    ]
    day = snapshot.attributes(TIMELINE_KEY).get("day")
    return WorldBrief(
        chapter=snapshot.chapter,
        day=int(float(day)) if day and _NUMBER.fullmatch(day) else None,
        characters=characters[:MAX_CHARACTERS],
        places=places[:MAX_PLACES],
        open_setups=setups,
    )


def chapter_brief(snapshot: WorldSnapshot, beats: ChapterBeats) -> WorldBrief:
    """The brief of a chapter's prompts: the world with the chapter's point-of-view
    character, place and cast first."""
    return world_brief(snapshot, focus=[beats.pov, beats.location, *beats.characters])
