"""Pydantic models for what each agent is given (``*Input``) and must answer.

These are the LLM edge of the system: inputs are rendered as JSON into the prompt and
outputs are validated against these models (one repair attempt on failure). Names of
characters, places and set-ups are plain strings as the model writes them; nodes map
them to world-memory keys.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Agent = Literal["director", "worldsmith", "writer", "reviewer"]
AGENTS: tuple[Agent, ...] = ("director", "worldsmith", "writer", "reviewer")


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)


# Bounds on every answer field: they are sent to endpoints that constrain decoding to the
# schema, so a small model cannot ramble inside one string or list until it runs out of
# tokens, and they are what validation enforces.
Name = Annotated[str, Field(min_length=1, max_length=80)]
"""A name of a character, place, thing or set-up, as the model writes it."""
Phrase = Annotated[str, Field(min_length=1, max_length=200)]
Names = Annotated[list[Name], Field(max_length=12)]
Language = Annotated[str, Field(pattern=r"^[a-z]{2,3}(?:-[A-Za-z0-9]{2,8})*$")]
"""The book's language as a BCP 47 tag; every prompt asks for prose in it."""
Attributes = Annotated[
    dict[Annotated[str, Field(max_length=40)], Annotated[str, Field(max_length=120)]],
    Field(max_length=8),
]
"""Short ``snake_case`` attribute names with short plain values."""


# --- director: story plan -------------------------------------------------------------


class StoryBible(_Model):
    """The book's identity, fixed before the first chapter."""

    title: str = Field(min_length=1, max_length=200)
    logline: str = Field(min_length=1, max_length=600)
    genre: str = Field(min_length=1, max_length=80)
    tone: str = Field(min_length=1, max_length=200)
    point_of_view: str = Field(min_length=1, max_length=120)
    themes: list[Phrase] = Field(min_length=1, max_length=8)


class ChapterOutline(_Model):
    """One chapter of the outline."""

    number: int = Field(ge=1, le=1000)
    title: str = Field(min_length=1, max_length=200)
    summary: str = Field(min_length=1, max_length=900)


class StoryPlanInput(_Model):
    """Director task ``story_plan``."""

    language: Language | None = None
    """The book's language; ``None`` is English (and keeps English prompts as they were)."""

    premise: str
    chapters: int
    genre: str | None = None
    notes: str | None = None
    """Author's revision notes on a previous plan, if any."""
    previous_outline: list[ChapterOutline] | None = None


class StoryPlan(_Model):
    """Director answer: bible and outline (exactly ``chapters`` entries, numbered 1..n)."""

    bible: StoryBible
    outline: list[ChapterOutline] = Field(min_length=1, max_length=1000)


# --- worldsmith: world seed ----------------------------------------------------------


class CharacterSeed(_Model):
    """A character of the seeded world."""

    name: Name
    aliases: list[Name] = Field(default_factory=list, max_length=4)
    role: str = Field(default="", max_length=60)
    description: str = Field(default="", max_length=400)
    fixed: Attributes = Field(default_factory=dict)
    """Attributes that never change, e.g. {"species": "human", "eye_colour": "grey"}."""
    mutable: Attributes = Field(default_factory=dict)
    """Attributes that may change, e.g. {"status": "alive", "occupation": "smuggler"}."""
    location: Name | None = None
    """Name of the location where the character starts."""
    faction: Name | None = None


class PlaceSeed(_Model):
    """A location, faction, item or rule of the seeded world."""

    name: Name
    aliases: list[Name] = Field(default_factory=list, max_length=4)
    description: str = Field(default="", max_length=400)
    fixed: Attributes = Field(default_factory=dict)


class RelationSeed(_Model):
    """A relationship between two named entities, e.g. ("Mara", "sibling_of", "Tobin")."""

    subject: Name
    type: str = Field(pattern=r"^[a-z][a-z_]{1,40}$")
    object: Name


class SetupSeed(_Model):
    """A foreshadowing set-up with the chapters where it is planted and paid off."""

    key: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,60}$")
    description: str = Field(min_length=1, max_length=400)
    plant_chapter: int = Field(ge=1, le=1000)
    payoff_chapter: int = Field(ge=1, le=1000)
    entities: Names = Field(default_factory=list)


class WorldSeedInput(_Model):
    """Worldsmith task ``world_places``: the premise, bible and outline to build from."""

    language: Language | None = None
    """The book's language; ``None`` is English (and keeps English prompts as they were)."""

    premise: str
    bible: StoryBible
    outline: list[ChapterOutline]


class WorldPlaces(_Model):
    """Worldsmith answer to ``world_places``: the places and things of the world."""

    locations: list[PlaceSeed] = Field(min_length=1, max_length=16)
    factions: list[PlaceSeed] = Field(default_factory=list, max_length=8)
    items: list[PlaceSeed] = Field(default_factory=list, max_length=12)
    rules: list[PlaceSeed] = Field(default_factory=list, max_length=8)


class WorldCastInput(_Model):
    """Worldsmith task ``world_cast``: the characters, placed in the world already built."""

    language: Language | None = None
    """The book's language; ``None`` is English (and keeps English prompts as they were)."""

    premise: str
    bible: StoryBible
    outline: list[ChapterOutline]
    locations: list[str]
    factions: list[str] = Field(default_factory=list)


class WorldCast(_Model):
    """Worldsmith answer to ``world_cast``."""

    characters: list[CharacterSeed] = Field(min_length=1, max_length=16)


class WorldLinksInput(_Model):
    """Worldsmith task ``world_links``: relationships and set-ups between known names."""

    language: Language | None = None
    """The book's language; ``None`` is English (and keeps English prompts as they were)."""

    premise: str
    bible: StoryBible
    outline: list[ChapterOutline]
    characters: list[str]
    names: list[str]
    """Every entity name (characters, locations, factions, items, rules)."""


class WorldLinks(_Model):
    """Worldsmith answer to ``world_links``."""

    relationships: list[RelationSeed] = Field(default_factory=list, max_length=32)
    setups: list[SetupSeed] = Field(default_factory=list, max_length=16)


class WorldSeed(_Model):
    """The world before chapter 1, assembled from the answers to ``world_places``,
    ``world_cast`` and ``world_links`` (three smaller answers than one: a small model
    fills each, and each can be constrained to names the earlier ones defined)."""

    characters: list[CharacterSeed] = Field(min_length=1, max_length=16)
    locations: list[PlaceSeed] = Field(min_length=1, max_length=16)
    factions: list[PlaceSeed] = Field(default_factory=list, max_length=8)
    items: list[PlaceSeed] = Field(default_factory=list, max_length=12)
    rules: list[PlaceSeed] = Field(default_factory=list, max_length=8)
    relationships: list[RelationSeed] = Field(default_factory=list, max_length=32)
    setups: list[SetupSeed] = Field(default_factory=list, max_length=16)


# --- shared world brief ---------------------------------------------------------------


class CharacterBrief(_Model):
    """A character as the world stands at a chapter."""

    name: str
    aliases: list[str] = Field(default_factory=list)
    description: str = ""
    attributes: dict[str, str] = Field(default_factory=dict)
    location: str | None = None
    relations: list[str] = Field(default_factory=list)
    """Readable relations, e.g. "sibling_of Tobin Venn"."""


class PlaceBrief(_Model):
    """A location (or faction, item, rule, event, secret) as the world stands at a chapter."""

    name: str
    kind: str
    description: str = ""
    held_by: str | None = None
    """For an item: who holds it now."""


class SetupBrief(_Model):
    """An open set-up."""

    key: str
    description: str
    plant_chapter: int
    payoff_chapter: int


class WorldBrief(_Model):
    """The world at a chapter, condensed for a prompt."""

    chapter: int
    day: int | None = None
    """The story's present day, when the world keeps a timeline."""
    characters: list[CharacterBrief] = Field(default_factory=list)
    places: list[PlaceBrief] = Field(default_factory=list)
    open_setups: list[SetupBrief] = Field(default_factory=list)


# --- director: chapter beats ----------------------------------------------------------


class Beat(_Model):
    """One step of a chapter."""

    summary: str = Field(min_length=1, max_length=600)
    characters: Names = Field(default_factory=list)
    location: Name | None = None


class PlannedEvent(_Model):
    """A change the chapter is meant to make to the world."""

    kind: Literal["move", "learn", "death", "meet", "reveal"]
    character: Name
    target: str = Field(default="", max_length=200)
    """Destination (move), what is learned/revealed, or whom they meet."""


class BeatsInput(_Model):
    """Director task ``chapter_beats``."""

    language: Language | None = None
    """The book's language; ``None`` is English (and keeps English prompts as they were)."""

    chapter: int
    chapters: int
    bible: StoryBible
    outline: ChapterOutline
    next_outline: ChapterOutline | None = None
    recent_summaries: list[str] = Field(default_factory=list)
    world: WorldBrief


class ChapterBeats(_Model):
    """Director answer: the plan of one chapter."""

    chapter: int = Field(ge=1, le=1000)
    title: str = Field(min_length=1, max_length=200)
    pov: Name
    location: Name
    characters: Names = Field(min_length=1)
    beats: list[Beat] = Field(min_length=1, max_length=12)
    plant: Names = Field(default_factory=list)
    """Keys of set-ups planted in this chapter."""
    payoff: Names = Field(default_factory=list)
    """Keys of set-ups paid off in this chapter."""
    events: list[PlannedEvent] = Field(default_factory=list, max_length=12)


# --- writer ---------------------------------------------------------------------------


class RetrievedPassage(_Model):
    """An earlier passage offered to the writer for continuity."""

    chapter: int
    text: str


class ReviewIssue(_Model):
    """A problem found by the reviewer, quoting the draft verbatim."""

    severity: Literal["minor", "major"]
    category: Literal["prose", "coherence", "pacing", "character", "consistency", "beats"]
    quote: str = Field(min_length=1, max_length=600)
    problem: str = Field(min_length=1, max_length=600)
    suggestion: str = Field(default="", max_length=600)


class DraftInput(_Model):
    """Writer task ``chapter_draft``; the answer is the chapter's prose (no heading)."""

    language: Language | None = None
    """The book's language; ``None`` is English (and keeps English prompts as they were)."""

    chapter: int
    title: str
    bible: StoryBible
    beats: ChapterBeats
    world: WorldBrief
    passages: list[RetrievedPassage] = Field(default_factory=list)
    previous_summary: str | None = None
    target_words: int = 900
    revision: int = 0
    previous_draft: str | None = None
    issues: list[ReviewIssue] = Field(default_factory=list)
    notes: str | None = None
    """Author's notes for this revision, if any."""


# --- reviewer -------------------------------------------------------------------------


class Scores(_Model):
    """Scores from 1 (poor) to 10 (excellent)."""

    prose: int = Field(ge=1, le=10)
    coherence: int = Field(ge=1, le=10)
    pacing: int = Field(ge=1, le=10)
    character: int = Field(ge=1, le=10)
    consistency: int = Field(ge=1, le=10)

    def lowest(self) -> int:
        """The weakest score, which decides acceptance."""
        return min(self.prose, self.coherence, self.pacing, self.character, self.consistency)


class ReviewInput(_Model):
    """Reviewer task ``chapter_review``."""

    language: Language | None = None
    """The book's language; ``None`` is English (and keeps English prompts as they were)."""

    chapter: int
    beats: ChapterBeats
    draft: str
    world: WorldBrief
    revision: int
    findings: list[ReviewIssue] = Field(default_factory=list)
    """Deterministic consistency findings computed before the review."""


class Verdict(_Model):
    """Reviewer answer. Every issue's ``quote`` must occur verbatim in the draft."""

    # Order matters under constrained decoding: the model writes fields in this order, so
    # an answer cut off at the token limit inside the issues still has its scores and
    # summary (the gateway keeps the complete part of a cut-off answer).
    scores: Scores
    summary: str = Field(min_length=1, max_length=1200)
    issues: list[ReviewIssue] = Field(default_factory=list, max_length=20)


# --- worldsmith: chapter changes ------------------------------------------------------


class NewEntity(_Model):
    """An entity that first appears in the chapter."""

    name: Name
    kind: Literal["character", "location", "faction", "item", "rule", "event", "secret"]
    description: str = Field(default="", max_length=600)
    aliases: list[Name] = Field(default_factory=list, max_length=4)
    fixed: Attributes = Field(default_factory=dict)
    """Traits that never change (species, eye colour, a birthplace)."""


class Move(_Model):
    """A character who ends the chapter somewhere else."""

    character: Name
    location: Name


class Learned(_Model):
    """Something a character learns in the chapter."""

    character: Name
    fact: str = Field(min_length=1, max_length=400)


class AttributeChange(_Model):
    """A mutable attribute that changes in the chapter."""

    entity: Name
    attribute: str = Field(pattern=r"^[a-z][a-z_]{0,40}$")
    value: str = Field(min_length=1, max_length=200)


class RelationChange(_Model):
    """A relationship that starts (or, with ``ended``, stops) in the chapter."""

    subject: Name
    type: str = Field(pattern=r"^[a-z][a-z_]{1,40}$")
    object: Name
    ended: bool = False


class ChangesInput(_Model):
    """Worldsmith task ``chapter_changes``."""

    chapter: int
    beats: ChapterBeats
    text: str
    world: WorldBrief


class ChapterChanges(_Model):
    """Worldsmith answer: what the accepted chapter changed in the world."""

    summary: str = Field(min_length=1, max_length=800)
    new_entities: list[NewEntity] = Field(default_factory=list, max_length=16)
    moves: list[Move] = Field(default_factory=list, max_length=16)
    learned: list[Learned] = Field(default_factory=list, max_length=16)
    deaths: Names = Field(default_factory=list)
    attributes: list[AttributeChange] = Field(default_factory=list, max_length=24)
    relationships: list[RelationChange] = Field(default_factory=list, max_length=24)
    paid_off: Names = Field(default_factory=list)
    planted: Names = Field(default_factory=list)


# --- reviewer: claims of a draft -------------------------------------------------------
# What a draft states, extracted once per draft: deterministic rules compare these claims
# with the world as of the chapter (nodes/integrity.py), and the claims of the accepted
# draft are what the chapter records in world memory. Every claim carries ``quote``, the
# draft's own words that show it, so a finding can point at the text.

Quote = Annotated[str, Field(min_length=1, max_length=300)]
"""Words copied exactly from the draft."""
Scene = Annotated[int, Field(ge=1, le=50)]
"""The scene of the chapter a claim belongs to, counting from 1 (scene breaks or clear
changes of time and place start a new one)."""


class PresenceClaim(_Model):
    """A character present, acting or speaking in the chapter, and where."""

    character: Name
    place: Name | None = None
    scene: Scene = 1
    memory: bool = False
    """True when it happens in a memory, flashback, dream, story or report, not now."""
    quote: Quote


class TravelClaim(_Model):
    """A character leaving for, travelling to or arriving at another place."""

    character: Name
    to: Name
    scene: Scene = 1
    quote: Quote


class DeathClaim(_Model):
    """A character who dies in the chapter."""

    character: Name
    quote: Quote


class RenameClaim(_Model):
    """An explicit change of name: from here on ``old`` is called ``new``."""

    old: Name
    new: Name
    quote: Quote


class ItemClaim(_Model):
    """Who has an item: ``holds`` (carries, wields, uses) or ``receives`` (is given it,
    takes it, finds it)."""

    item: Name
    character: Name
    action: Literal["holds", "receives"] = "holds"
    scene: Scene = 1
    memory: bool = False
    quote: Quote


class KnowledgeClaim(_Model):
    """A secret a character ``learns`` in the chapter, or already knows and ``refers`` to
    (mentions, acts on, thinks about)."""

    character: Name
    secret: Phrase
    """The secret's name as the world gives it, or a short statement of it."""
    action: Literal["learns", "refers"] = "refers"
    quote: Quote


class AttributeClaim(_Model):
    """A trait the draft states for a character or thing (eyes, hair, height, a scar)."""

    entity: Name
    attribute: str = Field(pattern=r"^[a-z][a-z_]{0,40}$")
    value: str = Field(min_length=1, max_length=120)
    cause: str = Field(default="", max_length=200)
    """Why it changed, when the draft says it changed (dyed, a curse, surgery)."""
    permanent: bool = False
    """True for a trait that does not change on its own (eye colour, species, a birthmark)."""
    quote: Quote


class TimeClaim(_Model):
    """A time marker: ``day`` (the story's day number, day 1 being the first day of the
    story), ``elapsed`` (time since the previous scene), ``age`` (``subject`` is this
    old) or ``since`` (the event ``subject`` happened this long ago)."""

    kind: Literal["day", "elapsed", "age", "since"]
    value: int = Field(ge=0, le=100000)
    unit: Literal["day", "week", "month", "year"] = "day"
    subject: Name | None = None
    scene: Scene = 1
    memory: bool = False
    quote: Quote


class PayoffClaim(_Model):
    """A set-up the draft pays off (shows, not merely mentions)."""

    setup: Phrase
    """The set-up's key or a short description of it."""
    quote: Quote


class PlantClaim(_Model):
    """A set-up the draft plants, to pay off in a later chapter."""

    key: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,60}$")
    description: str = Field(min_length=1, max_length=400)
    payoff_chapter: int = Field(ge=1, le=1000)
    quote: Quote


class ClaimsInput(_Model):
    """Reviewer task ``chapter_claims``: what the draft states."""

    language: Language | None = None
    """The book's language; ``None`` is English (and keeps English prompts as they were)."""

    chapter: int
    beats: ChapterBeats
    draft: str
    world: WorldBrief


class SceneClaims(_Model):
    """Reviewer answer to ``chapter_claims_scene``: who is where, who travels, dies or
    is renamed (the first part of :class:`ChapterClaims`, for models that answer it in
    parts)."""

    summary: str = Field(min_length=1, max_length=800)
    present: list[PresenceClaim] = Field(default_factory=list, max_length=40)
    travel: list[TravelClaim] = Field(default_factory=list, max_length=16)
    deaths: list[DeathClaim] = Field(default_factory=list, max_length=8)
    renames: list[RenameClaim] = Field(default_factory=list, max_length=4)


class DetailClaims(_Model):
    """Reviewer answer to ``chapter_claims_details``: what characters hold, know and are,
    and when things happen (the second part of :class:`ChapterClaims`)."""

    items: list[ItemClaim] = Field(default_factory=list, max_length=16)
    knowledge: list[KnowledgeClaim] = Field(default_factory=list, max_length=16)
    attributes: list[AttributeClaim] = Field(default_factory=list, max_length=24)
    time: list[TimeClaim] = Field(default_factory=list, max_length=16)


class ThreadClaims(_Model):
    """Reviewer answer to ``chapter_claims_threads``: set-ups, new entities and
    relationships (the third part of :class:`ChapterClaims`)."""

    paid_off: list[PayoffClaim] = Field(default_factory=list, max_length=8)
    planted: list[PlantClaim] = Field(default_factory=list, max_length=8)
    new_entities: list[NewEntity] = Field(default_factory=list, max_length=16)
    relationships: list[RelationChange] = Field(default_factory=list, max_length=24)


# Bases in reverse: pydantic lays out fields from the last base to the first, and the
# order is the order a model writes them in (the summary first).
class ChapterClaims(ThreadClaims, DetailClaims, SceneClaims):
    """Reviewer answer to ``chapter_claims``: every claim the draft makes that the world
    can confirm or contradict, each quoting the draft."""


CLAIM_PARTS: dict[str, type[_Model]] = {
    "chapter_claims_scene": SceneClaims,
    "chapter_claims_details": DetailClaims,
    "chapter_claims_threads": ThreadClaims,
}
"""The tasks that ask for :class:`ChapterClaims` in three smaller answers, in order."""
