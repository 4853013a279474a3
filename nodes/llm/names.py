"""Name pools, genre kits and name helpers shared by the offline model's generators.

Everything here is data or a pure function: the offline model must give the same answer
for the same request, so randomness always comes from :func:`seeded_rng`.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

FIRST_NAMES: tuple[str, ...] = (
    "Mara", "Tobin", "Ilse", "Corin", "Wren", "Anselm", "Petra", "Jonah", "Sabine", "Ezra",
    "Lio", "Rhea", "Matthias", "Odile", "Bram", "Nadia", "Silas", "Yara", "Teodor", "Ines",
    "Hollis", "Maren", "Casimir", "Juno", "Alder", "Vesna", "Osric", "Talia", "Emrys", "Greta",
    "Idris", "Noor", "Leander", "Cato", "Elspeth", "Rafe", "Saoirse", "Dario", "Mirela", "Kit",
)  # fmt: skip

SURNAMES: tuple[str, ...] = (
    "Venn", "Ashdown", "Marr", "Quill", "Halloran", "Strand", "Okafor", "Delacroix", "Brisk",
    "Vey", "Thorne", "Calloway", "Iwata", "Lind", "Moreau", "Greaves", "Sorensen", "Achterberg",
    "Pike", "Varga", "Rooke", "Castell", "Ferrante", "Holm", "Blackwood", "Sallow", "Kestrel",
    "Dunmore", "Arden", "Novak",
)  # fmt: skip

NICKNAMES: tuple[str, ...] = (
    "Red", "the Magpie", "Old Salt", "Sparrow", "the Widow", "Doc", "Ghost", "Lucky", "the Judge",
)  # fmt: skip

PLACE_ROOTS: tuple[str, ...] = (
    "Salt", "Grey", "Ash", "Raven", "Thorn", "Wren", "Cinder", "Marrow", "Lark", "Brack",
    "Ember", "Frost", "Gull", "Vesper", "Orrin", "Kestrel", "Tallow", "Hollow", "Stone", "Mist",
)  # fmt: skip

PLACE_SUFFIXES: tuple[str, ...] = (
    "mere", "ford", "wick", "haven", "gate", "moor", "reach", "fall", "stead", "holm",
)  # fmt: skip

EYE_COLOURS: tuple[str, ...] = ("grey", "brown", "green", "hazel", "blue", "amber", "dark")

# Honorifics are skipped when shortening a name, so "Captain Ilse Marr" becomes "Ilse".
TITLES: frozenset[str] = frozenset(
    {
        "captain", "doctor", "dr", "lady", "lord", "sir", "mr", "mrs", "ms", "inspector",
        "detective", "father", "mother", "sister", "brother", "professor", "master", "dame",
        "commander", "sergeant", "old", "young", "the", "king", "queen", "prince", "princess",
    }
)  # fmt: skip

_STOPWORD_TEXT = """a an the and or but if then than that this these those of in on at to from
    by for with without into onto over under about after before when while as is are was were be
    been being has have had do does did not no nor so such its it their they them her his him she
    he we our you your who whom whose which what where why how must can could will would
    shall should may might one two every each all any some more most other only own same
    very just also even still yet again ever never always until upon between across against
    through during finds discovers learns must becomes begins tries wants needs named called
    there here out up down off away back"""
STOPWORDS: frozenset[str] = frozenset(_STOPWORD_TEXT.split())

DEAD_STATUSES: frozenset[str] = frozenset({"dead", "deceased", "killed", "destroyed"})


@dataclass(frozen=True)
class GenreKit:
    """The stock material of one genre: places, factions, items, rules and texture.

    Templates use ``{root}`` and ``{suffix}`` (place names) or ``{name}`` (a character).
    """

    genre: str
    tones: tuple[str, ...]
    themes: tuple[str, ...]
    goals: tuple[str, ...]
    stakes: tuple[str, ...]
    reversals: tuple[str, ...]
    locations: tuple[tuple[str, str], ...]
    factions: tuple[tuple[str, str], ...]
    items: tuple[tuple[str, str], ...]
    rules: tuple[tuple[str, str], ...]
    setups: tuple[tuple[str, str], ...]
    """(key, description) with ``{item}``, ``{rival}``, ``{place}``, ``{hero}`` slots."""
    occupations: tuple[str, ...]
    species: tuple[str, ...]
    smells: tuple[str, ...]
    sounds: tuple[str, ...]
    details: tuple[str, ...]
    weather: tuple[str, ...]


FANTASY = GenreKit(
    genre="fantasy",
    tones=("lyrical and foreboding", "adventurous with a dark edge", "wry, warm and perilous"),
    themes=(
        "the price of power",
        "loyalty and betrayal",
        "memory and forgetting",
        "inheritance and duty",
        "faith against doubt",
        "home and exile",
    ),
    goals=(
        "break the old binding before the next moon",
        "carry the truth to the council in time",
        "find the heir before the hunters do",
        "undo the bargain that was made in their name",
    ),
    stakes=(
        "the valley will burn",
        "the old powers will wake",
        "everyone they love will forget them",
        "the crown will pass to a tyrant",
    ),
    reversals=(
        "the curse was a seal, and breaking it frees something worse",
        "the mentor who trained them made the bargain in the first place",
        "the enemy is fighting to prevent the same catastrophe",
    ),
    locations=(
        ("{root}{suffix}", "A walled market town where every lane leads down to the river."),
        ("{root} Keep", "A cold fortress of black stone above the pass, half of it in ruins."),
        ("{root}{suffix} Abbey", "A library-abbey whose monks copy forbidden books by candle."),
        ("{root}wood", "An old forest where the paths move when no one is looking."),
        ("{root} Crossing", "A toll bridge and its inn, where every traveller is noticed."),
    ),
    factions=(
        ("Order of the {root} Lantern", "Sworn keepers of the old bindings, secretive and proud."),
        ("{root} Guild", "Merchants who own the roads and everyone who travels them."),
        ("Circle of {root}", "Hedge-mages who answer to no crown."),
    ),
    items=(
        ("Cracked Compass", "A brass compass that points toward whatever its holder fears."),
        ("Salt-Iron Key", "A heavy key that opens no door anyone has ever found."),
        ("Ember Lantern", "A lantern whose flame never goes out and never gives heat."),
    ),
    rules=(
        ("The Blood Price", "Every spell takes something from its caster, and the cost is paid."),
        ("Salt Law", "The restless dead cannot cross an unbroken line of salt."),
        ("Oath Binding", "A sworn oath binds the speaker's body as well as their word."),
    ),
    setups=(
        ("{item}-secret", "The {item} that {hero} carries was made for a purpose no one names."),
        ("{rival}-oath", "{rival} once swore an oath at {place} and has never broken it."),
        ("sealed-door", "A sealed door lies beneath {place}, and the keyhole is warm."),
    ),
    occupations=(
        "cartographer",
        "blacksmith",
        "hedge-witch",
        "archivist",
        "sellsword",
        "ferry-keeper",
        "priest",
    ),
    species=("human", "human", "human", "half-elf"),
    smells=("woodsmoke", "wet stone", "tallow", "pine resin", "horse sweat", "old parchment"),
    sounds=(
        "a bell tolled twice and fell silent",
        "ravens argued somewhere overhead",
        "a cart creaked past on iron wheels",
        "the river muttered under the bridge",
    ),
    details=(
        "banners hung limp from the walls",
        "moss had claimed the lower stones",
        "candles guttered in every window",
        "someone had chalked a warding sign on the door",
    ),
    weather=(
        "Rain came in off the hills in long grey sheets.",
        "The morning was cold and clear.",
        "A low fog had settled into every hollow.",
        "The wind smelled of snow.",
    ),
)

SCIENCE_FICTION = GenreKit(
    genre="science fiction",
    tones=("tense and cerebral", "wonder-struck but lonely", "gritty and claustrophobic"),
    themes=(
        "what makes a person",
        "isolation and connection",
        "the cost of progress",
        "memory and identity",
        "survival against conscience",
        "the frontier and its price",
    ),
    goals=(
        "get the distress signal out before the relay dies",
        "bring the crew home before the air runs out",
        "prove the colony's charter is a lie",
        "decode the signal before the company buries it",
    ),
    stakes=(
        "the station will be scuttled with everyone aboard",
        "the colony will starve",
        "the truth will be erased from every record",
        "first contact will become a war",
    ),
    reversals=(
        "the signal was sent by their own ship, years from now",
        "the company engineered the disaster they were hired to fix",
        "the ship's mind has been protecting them from the truth",
    ),
    locations=(
        ("{root} Station", "A spinning ring station whose lower decks are never fully lit."),
        ("Port {root}", "A crowded dock town carved into an asteroid."),
        ("{root} Deep", "A research outpost under the ice of a frozen moon."),
        ("{root} Colony", "A dome colony of hydroponic farms and tired people."),
        ("{root}{suffix} Relay", "A derelict relay beacon drifting at the edge of the system."),
    ),
    factions=(
        ("{root} Consortium", "The company that owns the station, its air and its debts."),
        ("Free Haulers of {root}", "Independent pilots who trade in favours and silence."),
        ("{root} Union", "Dockworkers organising in secret against the Consortium."),
    ),
    items=(
        ("Black-Box Recorder", "A flight recorder salvaged from a ship that never existed."),
        ("Quantum Key", "A data key that decrypts only when its holder is afraid."),
        ("Nav Core", "The navigation core of a lost ship, still broadcasting coordinates."),
    ),
    rules=(
        ("Lightlag", "No message travels faster than light; news from home is always old."),
        ("Air Debt", "Every breath on the station is metered and billed to the breather."),
        ("The Quiet Protocol", "Ship minds may not lie to their crews, only stay silent."),
    ),
    setups=(
        ("{item}-anomaly", "The {item} that {hero} carries logs a timestamp from the future."),
        ("{rival}-ledger", "{rival} keeps a private ledger of every death on {place}."),
        ("sealed-bulkhead", "A bulkhead on {place} has been welded shut from the inside."),
    ),
    occupations=("engineer", "pilot", "medic", "xenobiologist", "salvager", "quartermaster"),
    species=("human", "human", "human", "synthetic"),
    smells=("ozone", "recycled air", "hot solder", "coolant", "burnt coffee", "machine oil"),
    sounds=(
        "the air scrubbers cycled with a tired sigh",
        "a pressure door hissed somewhere aft",
        "the hull ticked as it cooled",
        "an alarm chirped once and was silenced",
    ),
    details=(
        "frost had formed on the inside of the viewports",
        "half the deck lights were dead",
        "warning stencils had been painted over twice",
        "cables hung loose from the ceiling",
    ),
    weather=(
        "The station's night cycle had dimmed every corridor to amber.",
        "Outside the viewport the planet turned, blue and indifferent.",
        "A solar storm was building, and every screen carried its warning.",
        "Ice dust glittered against the dome like falling snow.",
    ),
)

MYSTERY = GenreKit(
    genre="mystery",
    tones=("wry and atmospheric", "taut and unsettling", "melancholy with sharp edges"),
    themes=(
        "the truth and its cost",
        "guilt and atonement",
        "small towns and big secrets",
        "justice against mercy",
        "the past refusing to stay buried",
        "trust and suspicion",
    ),
    goals=(
        "name the killer before another body turns up",
        "clear an innocent name before the trial",
        "find the missing witness before the storm closes the roads",
        "prove the accident was no accident",
    ),
    stakes=(
        "the wrong person will hang",
        "the killer will strike again",
        "the town will close ranks forever",
        "the evidence will be lost for good",
    ),
    reversals=(
        "the victim staged the first crime themselves",
        "the most trusted witness has been lying from the start",
        "two different people wanted the same person dead",
    ),
    locations=(
        ("{root} Street", "A steep street of shuttered shops and watchful windows."),
        ("{root}{suffix} Hotel", "A faded seaside hotel with more rooms than guests."),
        ("{root}{suffix} Manor", "A country house full of locked rooms and family portraits."),
        ("{root} Arms", "A low-beamed pub where everyone knows everyone's business."),
        ("{root}{suffix} Pier", "A rotting pier where the tide comes in fast and loud."),
    ),
    factions=(
        ("{root} Constabulary", "The local police, overworked and quick to close a case."),
        ("{root} Family", "Old money that owns half the town and most of its secrets."),
        ("{root} Syndicate", "Smugglers who work the coast after dark."),
    ),
    items=(
        ("Pocket Watch", "A stopped pocket watch engraved with someone else's initials."),
        ("Torn Photograph", "Half of a photograph; the missing half shows who took it."),
        ("Red Ledger", "An account book recording payments to people who are now dead."),
    ),
    rules=(
        (
            "Chain of Evidence",
            "Nothing counts in court unless someone can swear where it has been.",
        ),
        ("Small Town Silence", "Everyone knows everyone's business and tells none of it."),
        ("The Tide Table", "The causeway floods twice a day, and no one crosses it at night."),
    ),
    setups=(
        ("{item}-clue", "The {item} found near {place} does not belong to the victim."),
        ("{rival}-alibi", "{rival} claims to have been at {place} that night, and no one checked."),
        ("locked-room", "The study at {place} was locked from the inside, yet the key is missing."),
    ),
    occupations=("detective", "journalist", "pathologist", "publican", "solicitor", "constable"),
    species=("human",),
    smells=("cigarette smoke", "rain on wool", "old paper", "floor polish", "sea salt", "gin"),
    sounds=(
        "a telephone rang somewhere and no one answered it",
        "the clock in the hall struck the hour",
        "footsteps crossed the floor above and stopped",
        "a car idled too long outside",
    ),
    details=(
        "the curtains had been drawn at midday",
        "someone had wiped the table with great care",
        "a single glass stood unwashed by the sink",
        "the mirror had been turned to the wall",
    ),
    weather=(
        "Rain drummed on the windows without pause.",
        "A sea fret had rolled in overnight.",
        "The afternoon was hot and airless.",
        "Frost furred the railings along the front.",
    ),
)

LITERARY = GenreKit(
    genre="literary fiction",
    tones=("quiet and observant", "bittersweet and tender", "restless and lyrical"),
    themes=(
        "family and what it owes",
        "grief and renewal",
        "leaving and returning",
        "the stories we tell ourselves",
        "work and dignity",
        "love under pressure",
    ),
    goals=(
        "say the thing that has gone unsaid for years",
        "keep the family house from being sold",
        "find out who their mother was before the war",
        "decide whether to stay or to go",
    ),
    stakes=(
        "the family will fall apart for good",
        "the last chance to make amends will pass",
        "they will become the person they swore never to be",
        "the house will be lost",
    ),
    reversals=(
        "the letter was never meant for them",
        "the person they blamed was the one who protected them",
        "the choice they feared was already made for them years ago",
    ),
    locations=(
        ("{root}{suffix}", "A small coastal town that empties out every winter."),
        ("{root} Farm", "A farmhouse with a sagging roof and an orchard gone wild."),
        ("{root} Street", "A city street of bakeries, laundromats and old arguments."),
        ("{root}{suffix} Bay", "A grey bay where the ferry runs twice a day."),
        ("{root} House", "The family house, full of boxes nobody will open."),
    ),
    factions=(
        ("{root} Parish Council", "Neighbours who decide what the town remembers."),
        ("{root} Cannery Workers", "The people who kept the town alive and were forgotten."),
    ),
    items=(
        ("Tin of Letters", "A biscuit tin of letters tied with kitchen string."),
        ("Father's Watch", "A wristwatch that stopped the day the mill closed."),
        ("Old Photograph", "A photograph of a wedding nobody in the family talks about."),
    ),
    rules=(
        ("The Family Rule", "Nobody speaks about the year the mill closed."),
        ("Ferry Timetable", "The last ferry leaves at six, and missing it means staying."),
    ),
    setups=(
        ("{item}-truth", "The {item} that {hero} keeps hides a name no one expected."),
        ("{rival}-debt", "{rival} owes the family something from the years at {place}."),
        ("unsent-letter", "An unsent letter waits in a drawer at {place}."),
    ),
    occupations=("teacher", "fisher", "nurse", "shopkeeper", "painter", "farmer", "baker"),
    species=("human",),
    smells=("coffee", "cut grass", "diesel", "bread", "damp wool", "lilac"),
    sounds=(
        "a radio played in another room",
        "gulls wheeled and complained over the water",
        "the kettle began to whistle",
        "a dog barked twice down the road",
    ),
    details=(
        "the wallpaper was peeling at the corners",
        "boxes stood half-packed along the wall",
        "the garden had gone to seed",
        "a calendar still showed last spring",
    ),
    weather=(
        "It had rained all morning and the light was thin.",
        "The day was bright and windy.",
        "A long summer dusk settled over the rooftops.",
        "Sleet hissed against the glass.",
    ),
)

KITS: tuple[GenreKit, ...] = (FANTASY, SCIENCE_FICTION, MYSTERY, LITERARY)

_GENRE_WORDS: dict[str, tuple[str, ...]] = {
    "fantasy": (
        "dragon", "magic", "mage", "wizard", "witch", "sword", "kingdom", "sorcer", "spell",
        "elf", "elves", "curse", "prophecy", "throne", "fae", "fantasy", "myth", "knight",
    ),
    "science fiction": (
        "ship", "planet", "station", "space", "starship", "android", "robot", "colony",
        "orbit", "alien", "galaxy", "cyborg", "asteroid", "sci-fi", "science", "future",
        "cyberpunk", "moon",
    ),
    "mystery": (
        "murder", "detective", "killer", "body", "crime", "inspector", "heist", "missing",
        "disappear", "police", "poison", "mystery", "case", "noir", "thriller", "clue",
    ),
}  # fmt: skip


OFFLINE_VARIANT: ContextVar[str | None] = ContextVar("scribe_offline_variant", default=None)
"""Set while a variant of the offline model answers (``offline:<variant>``): the variant
salts every seed, so it answers differently from the plain model, yet deterministically."""


def seeded_rng(*parts: Any) -> random.Random:
    """A private random generator seeded by a blake2b digest of ``parts`` (as JSON).

    Python's ``hash()`` is salted per process, and the global ``random`` is shared, so
    neither can give the same answer twice across runs.
    """
    variant = OFFLINE_VARIANT.get()
    if variant:
        parts = (variant, *parts)
    payload = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    digest = hashlib.blake2b(payload.encode("utf-8"), digest_size=16).digest()
    return random.Random(int.from_bytes(digest, "big"))


def stable_fraction(*parts: Any) -> float:
    """A deterministic number in [0, 1) for ``parts``."""
    return seeded_rng(*parts).random()


def infer_genre(text: str) -> str:
    """The genre suggested by keywords in ``text``; literary fiction when none match."""
    lowered = text.lower()
    best, best_count = "literary fiction", 0
    for genre, words in _GENRE_WORDS.items():
        count = sum(1 for w in words if re.search(rf"\b{re.escape(w)}", lowered))
        if count > best_count:
            best, best_count = genre, count
    return best


def kit_for(genre: str) -> GenreKit:
    """The kit whose genre best matches a free-form genre label."""
    lowered = genre.lower()
    for kit in KITS:
        if kit.genre in lowered:
            return kit
    inferred = infer_genre(lowered)
    return next(k for k in KITS if k.genre == inferred)


def slug(text: str, limit: int = 40) -> str:
    """A set-up key fragment: lowercase letters, digits and hyphens."""
    out = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return out[:limit].strip("-") or "thread"


def short_name(name: str, aliases: list[str] | tuple[str, ...] = ()) -> str:
    """How the prose calls a character after the first mention."""
    for alias in aliases:
        if alias and len(alias.split()) == 1:
            return alias
    tokens = name.split()
    for token in tokens[:-1]:
        if token.lower().strip(".") not in TITLES:
            return token
    return tokens[-1] if tokens else name


def name_forms(name: str, aliases: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Every form by which text may refer to a named entity, longest first."""
    forms = {name.strip(), *(a.strip() for a in aliases if a.strip())}
    bare = re.sub(r"^(the|a|an)\s+", "", name.strip(), flags=re.IGNORECASE)
    forms.add(bare)
    tokens = bare.split()
    if len(tokens) > 1 and tokens[0].lower() not in TITLES and len(tokens[0]) > 2:
        forms.add(tokens[0])
    return sorted((f for f in forms if f), key=len, reverse=True)


def mentions(text: str, name: str, aliases: list[str] | tuple[str, ...] = ()) -> bool:
    """True when ``text`` names the entity (full name, alias or first name), ignoring case."""
    lowered = text.lower()
    for form in name_forms(name, aliases):
        if re.search(rf"(?<![\w]){re.escape(form.lower())}(?![\w])", lowered):
            return True
    return False


_CAPITALISED = re.compile(r"\b[A-Z][a-z'\u2019-]+(?:\s+(?:[A-Z][a-z'\u2019-]+|of|de|van|von))*\b")
_PLACE_LEADS = frozenset({"in", "at", "to", "from", "of", "near", "across", "beyond", "into", "on"})
_PERSON_LEADS = frozenset({"named", "called"})


def proper_names(text: str) -> tuple[list[str], list[str]]:
    """Capitalised names in ``text`` split into (people, places) by simple cues.

    A name after a preposition ("in Saltmere") is a place; a name after "named" or a
    known first name is a person; a sentence-initial stopword is never a name.
    """
    people: list[str] = []
    places: list[str] = []
    first_names = {n.lower() for n in FIRST_NAMES}
    for match in _CAPITALISED.finditer(text):
        words = match.group(0).split()
        while words and words[0].lower() in STOPWORDS | TITLES:
            words = words[1:]
        while words and words[-1].lower() in {"of", "de", "van", "von"}:
            words = words[:-1]
        if not words:
            continue
        candidate = " ".join(words)
        before = text[: match.start()].rstrip()
        previous = before.split()[-1].lower().strip(",;:") if before.split() else ""
        sentence_start = not before or before.endswith((".", "!", "?", ":"))
        if sentence_start and len(words) == 1 and words[0].lower() not in first_names:
            continue
        if previous == "the" and words[0].lower() not in first_names:
            # "the Ember Queen", "the Guild": a title or an institution, neither cast nor map.
            continue
        if previous in _PERSON_LEADS or words[0].lower() in first_names:
            target = people
        elif previous in _PLACE_LEADS:
            target = places
        else:
            target = people if len(words) >= 2 else places
        if candidate not in people and candidate not in places:
            target.append(candidate)
    return people, places


def content_words(text: str) -> list[str]:
    """Lowercase words of ``text`` that carry meaning, in order, without repeats."""
    seen: list[str] = []
    for word in re.findall(r"[A-Za-z][a-z'-]+", text):
        lowered = word.lower()
        if lowered in STOPWORDS or len(lowered) < 4 or word[0].isupper():
            continue
        if lowered not in seen:
            seen.append(lowered)
    return seen


_ADJECTIVES = frozenset(
    {
        "last", "first", "old", "new", "young", "little", "great", "only", "other", "next",
        "dead", "lost", "final", "whole", "strange", "small", "long", "ancient", "dark",
        "late", "former", "secret", "hidden", "broken", "cursed", "single", "certain",
    }
)  # fmt: skip


def nouns_in(text: str) -> list[str]:
    """Likely nouns: content words following an article or possessive ("a city")."""
    found: list[str] = []
    tokens = [re.sub(r"['\u2019]s$", "", t) for t in re.findall(r"[A-Za-z'\u2019-]+", text)]
    for i, token in enumerate(tokens[:-1]):
        if token.lower() not in {"a", "an", "the", "her", "his", "their", "its", "my", "of"}:
            continue
        for nxt in tokens[i + 1 : i + 3]:
            low = nxt.lower()
            if nxt[0].isupper() or low in STOPWORDS or len(low) < 4:
                break
            if low.endswith(("ed", "ing", "ly", "ous", "ful")) or low in _ADJECTIVES:
                continue
            if low not in found:
                found.append(low)
            break
    return found


def article(word: str) -> str:
    """``word`` with "a" or "an" in front."""
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"


def occupation_hint(premise: str, name: str) -> str | None:
    """The occupation the premise gives a named person ("a lighthouse keeper named Mara")."""
    escaped = re.escape(name)
    named = re.search(
        rf"\b(?:a|an|the)\s+([a-z][a-z -]{{2,40}}?)\s+(?:named|called)\s+{escaped}", premise
    )
    if named:
        return named.group(1).strip()
    before = re.search(rf"\b([a-z][a-z-]{{3,30}})\s+{escaped}", premise)
    if before and before.group(1) not in STOPWORDS:
        return before.group(1)
    return None


TITLE_ADJECTIVES: tuple[str, ...] = (
    "Broken", "Silent", "Hidden", "Burning", "Cold", "Narrow", "Long", "Bitter", "Quiet",
    "Borrowed", "Crooked", "Hollow", "Iron", "Empty", "Distant", "Second", "Drowned", "Pale",
)  # fmt: skip
TITLE_NOUNS: tuple[str, ...] = (
    "Road", "Bargain", "Lantern", "Tide", "Door", "Hour", "Promise", "Debt", "Mercy", "Map",
    "Signal", "Crossing", "Bridge", "Harbour", "Gate", "Letter", "Name", "Key", "Winter",
    "Hunt", "Vigil", "Mirror", "Witness", "Season",
)  # fmt: skip
