"""Offline generators for the writing tasks: chapter draft, claims and review.

The draft is assembled from the beats with sentence templates; the review applies plain,
repeatable heuristics to whatever draft it is given (offline or not); the claims are
read back from the beats' planned events, kept only when the draft bears them out.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass, field

from nodes.llm.names import (
    DEAD_STATUSES,
    GenreKit,
    content_words,
    kit_for,
    mentions,
    name_forms,
    seeded_rng,
    short_name,
    stable_fraction,
)
from nodes.schemas import (
    Beat,
    ChapterClaims,
    CharacterBrief,
    ClaimsInput,
    DeathClaim,
    DraftInput,
    KnowledgeClaim,
    NewEntity,
    PayoffClaim,
    PlaceBrief,
    PlantClaim,
    PresenceClaim,
    RelationChange,
    ReviewInput,
    ReviewIssue,
    Scores,
    TravelClaim,
    Verdict,
    WorldBrief,
)

# --- shared text helpers --------------------------------------------------------------

_SENTENCE = re.compile(r"[^.!?\n]+(?:[.!?]+[\"\u201d\u2019]?|$)")

WEAK_MARKERS: tuple[str, ...] = (
    "suddenly",
    "very",
    "somehow",
    "really",
    "all at once",
    "in that moment",
)


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text``; each one is a verbatim substring of it."""
    found: list[str] = []
    for match in _SENTENCE.finditer(text):
        sentence = match.group(0).strip()
        if sentence and any(ch.isalpha() for ch in sentence):
            found.append(sentence)
    return found


def _is_weak(sentence: str) -> bool:
    lowered = sentence.lower()
    return any(re.search(rf"\b{marker}\b", lowered) for marker in WEAK_MARKERS)


def _words(text: str) -> int:
    return len(text.split())


def _lower_first(text: str) -> str:
    first = text.split(" ", 1)[0]
    if first in {"A", "An", "The", "In", "At", "It", "Every", "Everything", "When", "With"}:
        return text[:1].lower() + text[1:]
    return text


def _full_stop(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "!", "?", '"', "\u201d")) else text + "."


# Present-tense verbs the beats use, so the prose can tell them in the past tense.
_PAST: dict[str, str] = {
    "is": "was", "are": "were", "has": "had", "have": "had", "must": "had to",
    "cannot": "could not", "can": "could", "leaves": "left", "travels": "travelled",
    "reaches": "reached", "arrives": "arrived", "makes": "made", "takes": "took",
    "wakes": "woke", "walks": "walked", "meets": "met", "notices": "noticed",
    "comes": "came", "acts": "acted", "face": "faced", "faces": "faced", "finds": "found",
    "argue": "argued", "agree": "agreed", "covers": "covered", "presses": "pressed",
    "gets": "got", "tells": "told", "changes": "changed", "share": "shared",
    "trade": "traded", "decides": "decided", "counts": "counted", "rests": "rested",
    "spends": "spent", "works": "worked", "keeps": "kept", "confronts": "confronted",
    "discovers": "discovered", "returns": "returned", "goes": "went", "wins": "won",
    "begins": "began", "strikes": "struck", "offers": "offered", "seems": "seemed",
    "holds": "held", "falls": "fell", "gives": "gave", "sets": "set", "buys": "bought",
    "costs": "cost", "surfaces": "surfaced", "wants": "wanted", "reveals": "revealed",
    "leads": "led", "warns": "warned", "learns": "learned", "points": "pointed",
    "hides": "hid", "waits": "waited", "lies": "lay", "looks": "looked", "knows": "knew",
    "carries": "carried", "owes": "owed", "claims": "claimed", "logs": "logged",
    "listens": "listened", "trusts": "trusted", "closes": "closed", "sees": "saw", "says": "said",
    "stands": "stood", "runs": "ran", "brings": "brought", "follows": "followed",
    "tries": "tried", "asks": "asked", "opens": "opened", "pulls": "pulled",
    "breaks": "broke", "fights": "fought", "flees": "fled", "hears": "heard",
    "loses": "lost", "pays": "paid", "plans": "planned", "prepares": "prepared",
    "promises": "promised", "refuses": "refused", "saves": "saved", "searches": "searched",
    "sends": "sent", "steals": "stole", "turns": "turned", "uses": "used",
    "visits": "visited", "writes": "wrote", "will": "would", "won't": "wouldn't", }  # fmt: skip


def past_tense(text: str) -> str:
    """``text`` with the common present-tense verbs of beat summaries put in the past."""

    def swap(match: re.Match[str]) -> str:
        word = match.group(0)
        past = _PAST.get(word.lower())
        if past is None:
            return word
        return past[:1].upper() + past[1:] if word[:1].isupper() else past

    return re.sub(r"\b[A-Za-z]+\b", swap, text)


def _find_character(world: WorldBrief, name: str) -> CharacterBrief | None:
    lowered = name.strip().lower()
    for character in world.characters:
        if character.name.lower() == lowered or lowered in (a.lower() for a in character.aliases):
            return character
    return None


def _find_place(world: WorldBrief, name: str) -> PlaceBrief | None:
    lowered = name.strip().lower()
    return next((p for p in world.places if p.name.lower() == lowered), None)


def _is_dead(character: CharacterBrief) -> bool:
    return character.attributes.get("status", "alive").strip().lower() in DEAD_STATUSES


# --- chapter draft --------------------------------------------------------------------

_SETTING = (
    "The air carried {smell} and something older underneath.",
    "Somewhere beyond {place}, {sound}.",
    "{p} noted that {detail}.",
    "The smell of {smell} hung over everything.",
    "Outside, {sound}.",
    "Light fell unevenly across the floor, picking out the worn places.",
    "{place} had changed since {p} last saw it, or {p} had.",
    "Here, {detail}, and no one remarked on it.",
    "{weather}",
    "Nobody in {place} looked twice at a stranger, which was its own kind of warning.",
    "For a moment the only sound was this: {sound}.",
    "It was colder than it had any right to be.",
    "The hours went by in the slow, grinding way of hours spent waiting.",
    "Every surface held a little dust and a little history.",
    "Far off, {sound}, and then nothing.",
    "{p} breathed in {smell} and tried to think clearly.",
)
_ACTION = (
    "{o} did not answer at once, and {p} let the silence stretch.",
    "{p} watched {o}'s {eyes} eyes and waited.",
    "{o} laughed, but there was no warmth in it.",
    "{p} kept both hands where {o} could see them.",
    "For a while neither {p} nor {o} spoke.",
    "{o} glanced toward the door, measuring the distance.",
    "{o} drew a slow breath before answering.",
    "{p} told {o} only half of what had happened, and watched to see which half mattered.",
    "{o} turned away for a moment, then back.",
    "{p} caught {o} staring at nothing, as if counting the hours left.",
    "{o} made a small gesture that might have been agreement.",
    "{p} and {o} had argued about less, and won less, in their time.",
    "{o} rubbed at a scar on one knuckle, an old habit {p} had almost forgotten.",
    "{p} offered {o} the last of the water, and {o} took it without thanks.",
    "{o} was the first to look away.",
    "{p} saw the decision arrive in {o}'s face before any word was said.",
    "{o} spoke quietly, as if the walls might be listening.",
    "{p} noticed that {o} had not once said the name aloud.",
)
_SOLO = (
    "{p} counted the exits out of habit.",
    "{p} set the pack down and listened.",
    "{p} checked the {item} again, as if it might have changed.",
    "{p} wrote two lines in the notebook and crossed both out.",
    "{p} ate standing up, without tasting anything.",
    "{p} rolled both shoulders and felt every mile of the day in them.",
    "{p} looked for the thing that was out of place, and found it.",
    "{p} put the question aside, because there would be time for it later.",
)
_INTERIOR = (
    "{p} had promised not to be afraid of this, and was.",
    "It would have been easier, {p} thought, never to have come to {place}.",
    "Every choice had narrowed the road, and {p} could feel the walls of it now.",
    "{p} thought of the unfinished {occupation}'s work at home, and of how small it looked "
    "from here.",
    "There would be a price for this; there always was.",
    "{p} wanted, more than anything, to be somewhere ordinary.",
    "The worst of it, {p} decided, was not knowing whom to trust.",
    "{p} held on to the plan because it was the only thing that held still.",
    "Some part of {p} had known this was coming.",
    "{p} filed the thought away for later, where the other bad thoughts waited.",
    "Fear, {p} had learned, was mostly a matter of waiting.",
    "{p} tried to remember the last ordinary day and could not place it.",
    "If this went wrong, {p} would have no one to blame but the person in the mirror.",
    "{p} let the anger cool into something more useful.",
    "There was a version of today in which {p} had simply stayed at home.",
    "{p} had been told once that courage was a habit; it did not feel like one.",
)
_MOOD_NARRATION: dict[str, tuple[str, ...]] = {
    "conflict": (
        "The argument went round twice before either of them gave ground.",
        "{p} refused to look away first.",
        "Neither of them raised a voice, which was worse.",
        "{o}'s jaw tightened, and the room seemed to shrink around them.",
    ),
    "discovery": (
        "{p} read it twice to be sure.",
        "It was the kind of detail that is easy to miss and impossible to forget.",
        "{p} felt the shape of the whole thing shift.",
        "Once seen, it could not be unseen.",
    ),
    "journey": (
        "The road gave {p} too much time to think.",
        "Every mile put home further behind and the problem no further away.",
        "{p} walked until the walking became its own kind of thinking.",
        "By the time they stopped, the light had changed twice.",
    ),
    "loss": (
        "Afterwards, {p} could not remember the order of things.",
        "The silence that followed had weight.",
        "{p} did not cry, not then.",
        "Someone, somewhere, was still laughing, and that was the hardest part.",
    ),
    "": (
        "{p} weighed what had been said against what had not.",
        "It was not much, but it was a beginning.",
        "{p} understood that the day had turned, though not yet which way.",
        "Small things, {p} thought, and every one of them pointing the same way.",
    ),
}
_MOOD_WORDS: dict[str, tuple[str, ...]] = {
    "loss": ("kill", "die", "dead", "lost", "falls apart", "fell apart", "grief", "mourn"),
    "conflict": ("face", "clash", "threat", "confront", "argu", "rival", "strike", "struck"),
    "discovery": ("notice", "find", "found", "learn", "discover", "comes due", "came due", "truth"),
    "journey": ("travel", "leave", "left", "arriv", "reach", "sets out", "crossing", "road"),
}
_WEAK = (
    "Suddenly, everything felt very different to {p}.",
    "{p} somehow knew that something was really wrong.",
    "In that moment, {p} was very tired of all of it.",
    "All at once the place felt very small.",
)
_LINES: dict[str, tuple[str, ...]] = {
    "conflict": (
        "You don't get to decide that for me",
        "I know what happened at {place}",
        "Say that again and we're finished",
        "You were never on my side, were you?",
        "I'm done being afraid of you",
        "Is that a threat?",
    ),
    "discovery": (
        "Look at this. Someone wanted it found",
        "How long has this been here?",
        "That isn't possible",
        "Who else has seen it?",
        "It changes everything, doesn't it?",
        "Don't touch it yet",
    ),
    "journey": (
        "We leave at first light",
        "If we're quick, no one will notice",
        "How far is it from here?",
        "The road won't be watched after dark",
        "Pack only what you can carry",
    ),
    "loss": (
        "Stay with me",
        "It shouldn't have been like this",
        "There was nothing you could have done",
        "Don't look",
        "We have to go. Now",
    ),
    "": (
        "We can't stay here long",
        "Tell me what you saw",
        "You knew about this, didn't you?",
        "I need the truth this time",
        "Then we do it my way",
        "Nobody comes to {place} by accident",
        "Keep your voice down",
        "You should have told me sooner",
        "What did it cost you?",
        "I'm not leaving without an answer",
        "If we're wrong about this, we won't get a second chance",
        "Who else knows?",
        "I didn't come all this way to turn back",
        "You look like you haven't slept",
        "Say it plainly",
        "It isn't safe to talk here",
        "How long have you known?",
        "There's always a price",
        "Where were you when it happened?",
        "I'd rather be wrong than be too late",
    ),
}
_TAGS = (
    '"{line}," {s} said.',
    '"{line}," said {s}.',
    '"{line}," {s} said quietly.',
    '"{line}," {s} said, not looking up.',
)
_REPLY_TAGS = ('"{line}," {s} answered.', '"{line}," {s} said at last.', '"{line}," said {s}.')
_SOLO_LINES = (
    "Not again",
    "All right. One thing at a time",
    "Think",
    "So that's how it is",
    "You knew this would happen",
    "Come on. Come on",
)
_SOLO_TAGS = ('"{line}," {s} muttered.', '"{line}," {s} said aloud, to no one in particular.')
_OPENINGS_STAY = (
    "{P} knew every corner of {place}, or had thought so.",
    "{P} had lived with {place} long enough to stop seeing it.",
    "For {P}, {place} was the one fixed point in a moving world.",
)
_OPENINGS_MOVE = (
    "{P} had not been to {place} in a long time.",
    "{P} came to {place} with the dust of the road still on every seam.",
    "{P} saw {place} for the first time in years and did not like what had changed.",
)
_CLOSINGS = (
    "By the time the light failed over {place}, {p} knew there was no going back.",
    "{p} slept badly that night, if at all.",
    "Whatever came next, {p} would meet it awake.",
    "{p} stayed at {place} a while longer, listening to the quiet.",
)


def _mood(summary: str) -> str:
    """The feeling of a beat, from the verbs of its summary."""
    lowered = summary.lower()
    for mood, words in _MOOD_WORDS.items():
        if any(w in lowered for w in words):
            return mood
    return ""


@dataclass
class _Writer:
    """Sentence-level state of one draft: names used, sentences written, banned quotes."""

    inp: DraftInput
    kit: GenreKit
    rng: random.Random
    banned: list[str]
    weak_budget: int = 0
    used: set[str] = field(default_factory=set)
    used_templates: Counter[str] = field(default_factory=Counter)
    used_lines: set[str] = field(default_factory=set)
    introduced: set[str] = field(default_factory=set)

    def name(self, name: str) -> str:
        """Full name at first mention, the short form afterwards."""
        if name in self.introduced:
            return self.short(name)
        self.introduced.add(name)
        return name

    def short(self, name: str) -> str:
        """The short form of a character's name (alias or first name)."""
        character = _find_character(self.inp.world, name)
        return short_name(name, character.aliases if character else ())

    def allowed(self, sentence: str) -> bool:
        """Not written yet and not one the reviewer quoted (revisions rewrite those)."""
        if sentence in self.used:
            return False
        return not any(q in sentence or sentence in q for q in self.banned)

    def take(self, *variants: str) -> str | None:
        """The first allowed variant, recorded as used; ``None`` if all are spent."""
        for variant in variants:
            sentence = _full_stop(variant)
            if self.allowed(sentence):
                self.used.add(sentence)
                return sentence
        return None

    def slots(self, pov: str, other: str | None, place: str) -> dict[str, str]:
        """Values for template slots: names, place and the genre's sensory texture."""
        character = _find_character(self.inp.world, other or pov)
        pov_brief = _find_character(self.inp.world, pov)
        items = [p.name for p in self.inp.world.places if p.kind == "item"]
        return {
            "p": self.short(pov),
            "o": self.short(other) if other else "",
            "place": place,
            "smell": self.rng.choice(self.kit.smells),
            "sound": self.rng.choice(self.kit.sounds),
            "detail": self.rng.choice(self.kit.details),
            "weather": self.rng.choice(self.kit.weather),
            "eyes": (character.attributes.get("eye_colour") if character else None) or "tired",
            "occupation": (pov_brief.attributes.get("occupation") if pov_brief else None) or "day",
            "item": items[0] if items else "map",
        }

    def from_pool(
        self, pool: tuple[str, ...], pov: str, others: list[str], place: str, reuse: int = 1
    ) -> str | None:
        """A sentence from a template of ``pool`` used fewer than ``reuse`` times so far."""
        fresh = [t for t in pool if self.used_templates[t] < reuse]
        if not others:
            fresh = [t for t in fresh if "{o}" not in t]
        self.rng.shuffle(fresh)
        for template in fresh:
            other = self.rng.choice(others) if others else None
            sentence = self.take(template.format(**self.slots(pov, other, place)))
            if sentence:
                self.used_templates[template] += 1
                return sentence
        return None

    def filler(self, pov: str, others: list[str], place: str, mood: str, reuse: int) -> str | None:
        """One elaboration sentence for a beat: setting, action, thought or mood."""
        if self.weak_budget > 0 and self.rng.random() < 0.2:
            sentence = self.from_pool(_WEAK, pov, others, place)
            if sentence:
                self.weak_budget -= 1
                return sentence
        pools: list[tuple[str, ...]] = [_MOOD_NARRATION[mood], _SETTING, _INTERIOR, _SOLO]
        if others:
            pools = [_MOOD_NARRATION[mood], _ACTION, _SETTING, _ACTION, _INTERIOR]
        start = self.rng.randrange(len(pools))
        for pool in pools[start:] + pools[:start]:
            sentence = self.from_pool(pool, pov, others, place, reuse)
            if sentence:
                return sentence
        return None

    def line(self, speaker: str, place: str, mood: str, *, reply: bool = False) -> str | None:
        """One line of dialogue in the beat's mood, tagged with its speaker."""
        lines = [x for x in (*_LINES[mood], *_LINES[""]) if x not in self.used_lines]
        picks = lines[: len(_LINES[mood])] if mood else lines
        self.rng.shuffle(picks)
        for text in picks or lines:
            spoken = text.format(place=place)
            if spoken.endswith("?"):
                rendered = f'"{spoken}" {self.short(speaker)} asked.'
            else:
                tag = self.rng.choice(_REPLY_TAGS if reply else _TAGS)
                rendered = tag.format(line=spoken, s=self.short(speaker))
            sentence = self.take(rendered)
            if sentence:
                self.used_lines.add(text)
                return sentence
        return None


def _phrase(text: str) -> str:
    """A short phrase (up to ten words) quoted from an earlier passage."""
    sentences = [s for s in split_sentences(text) if '"' not in s and _words(s) >= 4]
    if sentences:
        source = sentences[0]
    else:
        # Only dialogue: quote the words spoken, which the passage holds verbatim.
        spoken = re.search(r'"([^"]{3,})"', text)
        source = spoken.group(1) if spoken else text.replace('"', "")
    words = source.split()[:10]
    return " ".join(words).rstrip(",;:.!?")


def _event_home(beats: list[Beat], name: str, keyword: str, default: int) -> int:
    """The index of the beat that mentions ``name`` (and ``keyword``), else ``default``."""
    for i, beat in enumerate(beats):
        if mentions(beat.summary, name) and keyword in beat.summary.lower():
            return i
    for i, beat in enumerate(beats):
        if mentions(beat.summary, name):
            return i
    return max(0, min(default, len(beats) - 1))


def _covered(beats: list[Beat], text: str) -> bool:
    """True when some beat summary already tells ``text`` (so prose should not repeat it)."""
    needle = text.lower().rstrip(". ")[:60]
    return any(needle in b.summary.lower() for b in beats)


def chapter_draft(inp: DraftInput) -> str:
    """The chapter's prose: one or more paragraphs per beat, about ``target_words`` long."""
    rng = seeded_rng("draft", inp.model_dump(mode="json"))
    kit = kit_for(inp.bible.genre)
    beats = inp.beats
    protected = {
        form.lower()
        for name in [beats.pov, beats.location, *beats.characters]
        for form in name_forms(name)
    }
    banned = [
        issue.quote.strip()
        for issue in inp.issues
        if len(issue.quote.strip()) >= 4 and issue.quote.strip().lower() not in protected
    ]
    # A repeated paragraph is rewritten whole, and earlier chapters' passages are not
    # written again: the reviewer reports repetition within and across chapters.
    previous = inp.previous_draft or ""
    for issue in inp.issues:
        if "repeats" in issue.problem:
            paragraph = next((p for p in previous.split("\n\n") if issue.quote in p), "")
            banned += [s.strip() for s in split_sentences(paragraph) if len(s.strip()) >= 20]
    for passage in inp.passages:
        banned += [s.strip() for s in split_sentences(passage.text) if len(s.strip()) >= 20]
    writer = _Writer(inp=inp, kit=kit, rng=rng, banned=banned)
    # First drafts may carry a little filler; revisions are written tighter.
    writer.weak_budget = rng.choice((0, 0, 1, 2)) if inp.revision == 0 else 0
    target = max(120, inp.target_words)
    notes = (inp.notes or "").strip()
    directions = " ".join([notes, *(f"{i.problem} {i.suggestion}" for i in inp.issues)]).lower()
    if any(w in directions for w in ("shorter", "tighten", "trim", "drags", "too long")):
        target = int(target * 0.85)
    if any(w in directions for w in ("longer", "rushed", "expand", "too short")):
        target = int(target * 1.15)
    exchange = 3 if "dialogue" in directions or "speak" in directions else 2

    pov = beats.pov
    story_beats = beats.beats or [Beat(summary=beats.title, characters=[pov])]
    moods = [_mood(b.summary) for b in story_beats]
    per_beat: list[list[list[str]]] = [[] for _ in story_beats]

    # Opening: the weather, the place and whose eyes we see it through.
    place = story_beats[0].location or beats.location
    origin = _find_character(inp.world, pov)
    moving = any(e.kind == "move" and e.character == pov for e in beats.events)
    slots = writer.slots(pov, None, place)
    opening = [
        s
        for s in (
            writer.take(slots["weather"]),
            writer.take(
                rng.choice(_OPENINGS_MOVE if moving else _OPENINGS_STAY).format(
                    P=writer.name(pov), place=place
                )
            ),
        )
        if s
    ]
    brief = _find_place(inp.world, place)
    if brief and brief.description:
        desc = _lower_first(brief.description.rstrip(". "))
        sentence = writer.take(f"{place} was what it had always been: {desc}")
        opening += [sentence] if sentence else []
    if inp.previous_summary:
        sentence = writer.take(f"What had happened before still weighed on {slots['p']}")
        opening += [sentence] if sentence else []

    # Events and set-ups, attached to the beat that is about them.
    attached: list[list[str]] = [[] for _ in story_beats]
    p_short = writer.short(pov)
    for event in beats.events:
        if event.kind == "move":
            if event.character == pov:
                start = origin.location if origin and origin.location else None
                text = writer.take(
                    f"The journey from {start} to {event.target} had taken longer than "
                    f"{p_short} liked"
                    if start
                    else f"{p_short} had come to {event.target} by the long road",
                    f"{p_short} had come to {event.target} by the long road",
                )
            else:
                who = writer.name(event.character)
                text = writer.take(
                    f"{who} had made the same journey to {event.target}, for private reasons",
                    f"{who} was already at {event.target}",
                )
            attached[0] += [text] if text else []
        elif event.kind == "meet":
            home = _event_home(story_beats, event.target, "meet", 1)
            if not _covered(story_beats, f"{event.character} meets {event.target}"):
                first, second = writer.name(event.character), writer.name(event.target)
                text = writer.take(
                    f"That was how {first} first met {second}",
                    f"{first} and {second} met there for the first time",
                )
            else:
                text = writer.take(
                    f"Neither {writer.short(event.character)} nor {writer.short(event.target)} "
                    "offered a hand at first"
                )
            attached[home] += [text] if text else []
        elif event.kind == "death":
            home = _event_home(story_beats, event.character, "kill", len(story_beats) - 2)
            victim = writer.name(event.character)
            for text in (
                writer.take(
                    f"{victim} fell and did not rise again",
                    f"{victim} died there, quickly and without a word",
                ),
                writer.take(
                    f"{p_short} knelt beside {writer.short(event.character)} until "
                    "there was no point in kneeling any longer"
                ),
            ):
                attached[home] += [text] if text else []
        elif event.kind == "reveal":
            text = writer.take(
                f"{writer.short(event.character)} revealed it at last: {event.target}"
            )
            attached[min(1, len(story_beats) - 1)] += [text] if text else []
    setups = {s.key: s for s in inp.world.open_setups}
    learned = {e.target for e in beats.events if e.kind == "learn"}
    for key in beats.plant:
        setup = setups.get(key)
        desc = setup.description if setup else key.replace("-", " ")
        learned.discard(desc)
        home = _event_home(story_beats, pov, "notices", 1)
        told = past_tense(_lower_first(desc.rstrip(". ")))
        if _covered(story_beats, desc):
            text = writer.take(
                f"{p_short} learned it and said nothing, turning it over in private",
                f"{p_short} said nothing about it to anyone, not yet",
            )
        else:
            text = writer.take(
                f"{p_short} learned something that would matter later: {told}",
                f"{p_short} noticed it and kept it close: {told}",
            )
        attached[home] += [text] if text else []
    for fact in sorted(learned):
        text = writer.take(f"{p_short} understood it then: {past_tense(_lower_first(fact))}")
        attached[min(1, len(story_beats) - 1)] += [text] if text else []
    for key in beats.payoff:
        setup = setups.get(key)
        desc = setup.description if setup else key.replace("-", " ")
        since = f"since chapter {setup.plant_chapter}" if setup else "for a long time"
        home = _event_home(story_beats, pov, "comes due", len(story_beats) - 2)
        told = past_tense(_lower_first(desc.rstrip(". ")))
        if _covered(story_beats, desc):
            text = writer.take(
                f"{p_short} had carried that knowledge {since}, and now, at last, it mattered",
                f"It had waited {since} for this moment",
            )
        else:
            text = writer.take(
                f"Then it came back to {p_short}, the thing half-forgotten {since}: {told}",
                f"{p_short} saw at last what it had all been for: {told}",
            )
        attached[home] += [text] if text else []

    # The dead take no part in the beats after their death (or in their own, afterwards).
    died = {
        e.character: _event_home(story_beats, e.character, "kill", len(story_beats) - 2)
        for e in beats.events
        if e.kind == "death"
    }

    def living(names: list[str], index: int) -> list[str]:
        return [n for n in names if n and (n not in died or index < died[n])]

    # Characters of the chapter that no beat names are placed in the middle beat.
    in_beats = {c for b in story_beats for c in b.characters}
    witnesses = [c for c in beats.characters if c and c not in in_beats and c not in died]

    # Beats: a narrative paragraph, a short exchange of dialogue, then room to grow.
    for i, beat in enumerate(story_beats):
        where = beat.location or beats.location
        cast = [c for c in beat.characters or [pov] if c]
        if i == len(story_beats) // 2:
            cast += witnesses
        told = past_tense(beat.summary.strip())
        narrative: list[str] = []
        # A quoted summary sentence is retold with short names so it no longer matches.
        retold = told
        for name in sorted(set(cast) | {pov}, key=len, reverse=True):
            if len(name.split()) > 1:
                retold = retold.replace(name, writer.short(name))
        summary = writer.take(
            told,
            retold,
            f"What happened at {where} was simple to tell: {_lower_first(retold)}",
        )
        narrative += [summary] if summary else []
        for name in cast:
            writer.introduced.add(name)
        unnamed = [c for c in cast if not any(mentions(s, c) for s in narrative)]
        if unnamed:
            who = " and ".join(unnamed)
            sentence = writer.take(
                f"{who} {'were' if len(unnamed) > 1 else 'was'} there at {where} for all of it",
                f"At {where}, {who} watched it happen",
            )
            narrative += [sentence] if sentence else []
        narrative += attached[i]
        others = [c for c in living(cast, i) if c != pov]
        development = writer.from_pool(_MOOD_NARRATION[moods[i]], pov, others, where)
        narrative += [development] if development else []
        block: list[list[str]] = [narrative]
        if others:
            speakers = [pov, *others]
            for turn in range(exchange):
                spoken = writer.line(
                    speakers[turn % len(speakers)], where, moods[i], reply=turn > 0
                )
                block += [[spoken]] if spoken else []
        else:
            # Alone, the point-of-view character talks to no one in particular.
            lines = [x for x in _SOLO_LINES if x not in writer.used_lines]
            if lines:
                text = rng.choice(lines)
                writer.used_lines.add(text)
                spoken = writer.take(rng.choice(_SOLO_TAGS).format(line=text, s=p_short))
                block += [[spoken]] if spoken else []
        per_beat[i] = block

    # Continuity and the author's notes.
    recall: list[str] = []
    if inp.passages:
        passage = rng.choice(inp.passages)
        phrase = _phrase(passage.text)
        if phrase:
            sentence = writer.take(
                f'{p_short} remembered what had happened in chapter {passage.chapter}: "{phrase}."',
                f"{p_short} remembered chapter {passage.chapter}, and the words that "
                f'still would not leave: "{phrase}."',
            )
            recall += [sentence] if sentence else []
    noted: list[str] = []
    if notes:
        quoted = re.findall(r"[\"\u201c]([^\"\u201d]{3,200})[\"\u201d]", notes)
        for line in quoted[:2]:
            sentence = writer.take(f'"{line.strip().rstrip(".,")}," {p_short} said.')
            noted += [sentence] if sentence else []
        named = [c for c in inp.world.characters if mentions(notes, c.name, c.aliases)]
        for character in [c for c in named if not _is_dead(c)][:2]:
            spoken = writer.line(character.name, beats.location, "")
            noted += [spoken] if spoken else []
        skip = {"make", "more", "less", "chapter", "scene", "please", "should", "want"}
        words = [w for w in content_words(notes) if w not in skip]
        if words:
            listed = ", ".join(f"the {w}" for w in words[:4])
            sentence = writer.take(f"{p_short} kept returning to it: {listed}")
            noted += [sentence] if sentence else []

    end_place = story_beats[-1].location or beats.location
    closing = [
        s for s in (writer.take(rng.choice(_CLOSINGS).format(p=p_short, place=end_place)),) if s
    ]

    def total() -> int:
        blocks = [opening, recall, noted, closing, *(p for b in per_beat for p in b)]
        return sum(_words(s) for p in blocks for s in p)

    # Grow the beats in turn until the chapter reaches its length; templates are reused
    # only once every one of them has been used, and then sparingly.
    turn, stalled, reuse = 0, 0, 1
    while total() < target and reuse <= 3:
        i = turn % len(story_beats)
        turn += 1
        beat = story_beats[i]
        where = beat.location or beats.location
        others = [c for c in living(beat.characters, i) if c != pov]
        sentence = writer.filler(pov, others, where, moods[i], reuse)
        if sentence is None:
            stalled += 1
            if stalled >= len(story_beats):
                reuse, stalled = reuse + 1, 0
            continue
        stalled = 0
        block = per_beat[i]
        tail = block[-1]
        if len(block) == 1 or tail[0].startswith('"') or _words(" ".join(tail)) > 80:
            block.append([sentence])
        else:
            tail.append(sentence)

    paragraphs: list[list[str]] = [opening]
    for i, block in enumerate(per_beat):
        paragraphs.extend(block)
        if i == 0:
            paragraphs += [recall, noted]
    paragraphs.append(closing)
    text = _join(paragraphs, banned)
    if inp.previous_draft and text.strip() == inp.previous_draft.strip():
        text += "\n\n" + f"{p_short} did not look back."
    return text


def _join(paragraphs: list[list[str]], banned: list[str]) -> str:
    """Paragraphs separated by blank lines, without any sentence a reviewer quoted."""
    kept = [p for p in paragraphs if p]
    text = "\n\n".join(" ".join(p) for p in kept)
    for quote in banned:
        if quote in text:
            # The quote spans sentences: drop the paragraphs it touches rather than keep it.
            kept = [p for p in kept if quote not in " ".join(p)] or kept
            text = "\n\n".join(" ".join(p) for p in kept)
    return text


# --- chapter review -------------------------------------------------------------------

_EYES = re.compile(r"\b(grey|gray|brown|green|hazel|blue|amber|dark|black|violet)\s+eyes\b")


def _anchor(draft: str, quote: str, sentences: list[str]) -> str:
    """``quote`` if the draft contains it, else the sentence that best stands for it."""
    if quote and quote in draft:
        return quote
    words = {w.lower() for w in re.findall(r"[A-Za-z]{4,}", quote)}
    return max(
        sentences,
        key=lambda s: len(words & {w.lower() for w in re.findall(r"[A-Za-z]{4,}", s)}),
        default=draft.strip()[:200] or "",
    )


def chapter_review(inp: ReviewInput) -> Verdict:
    """Deterministic heuristics over the draft: coverage, length, repetition, dialogue."""
    draft = inp.draft
    if not draft.strip():
        # Nothing to quote, so nothing to point at: the lowest scores say it all.
        return Verdict(
            scores=Scores(prose=1, coherence=1, pacing=1, character=1, consistency=1),
            summary="The draft is empty; the chapter has to be written before it can be judged.",
        )
    sentences = split_sentences(draft) or [draft.strip()[:600]]
    opening = sentences[0]
    narrative = [s for s in sentences if '"' not in s and "\u201c" not in s]
    scores = _base_scores(inp)
    issues: list[ReviewIssue] = []

    def issue(severity: str, category: str, quote: str, problem: str, suggestion: str) -> None:
        issues.append(
            ReviewIssue.model_validate(
                {
                    "severity": severity,
                    "category": category,
                    "quote": quote[:600].strip(),
                    "problem": problem,
                    "suggestion": suggestion,
                }
            )
        )

    # Beat coverage: does the text name the people and places the beats call for?
    beats = inp.beats
    wanted = list(
        dict.fromkeys(
            [beats.pov, *beats.characters, *(c for b in beats.beats for c in b.characters)]
        )
    )
    missing: list[str] = []
    for name in wanted:
        character = _find_character(inp.world, name)
        if not mentions(draft, name, character.aliases if character else ()):
            missing.append(name)
    if beats.pov in missing:
        scores["character"] = min(scores["character"], 4)
        issue(
            "major",
            "beats",
            opening,
            f"The point-of-view character {beats.pov} is never named.",
            f"Anchor the chapter in {beats.pov}'s perspective from the first paragraph.",
        )
    for name in [m for m in missing if m != beats.pov][:3]:
        scores["coherence"] -= 1
        issue(
            "minor",
            "beats",
            opening,
            f"{name} is part of this chapter's beats but never appears in the text.",
            f"Give {name} a visible part in the scene.",
        )
    places = list(dict.fromkeys([beats.location, *(b.location for b in beats.beats if b.location)]))
    unnamed_places = [p for p in places if p and not mentions(draft, p)]
    if beats.location in unnamed_places:
        scores["coherence"] = min(scores["coherence"], 5)
        issue(
            "major",
            "coherence",
            opening,
            f"The chapter takes place at {beats.location}, but the text never says so.",
            f"Name {beats.location} early and ground the scene there.",
        )

    # Length against the density of the beats.
    per_beat = _words(draft) / max(1, len(beats.beats))
    if per_beat < 50:
        scores["pacing"] = min(scores["pacing"], 4)
        issue(
            "major",
            "pacing",
            min(narrative or sentences, key=len),
            f"Only about {int(per_beat)} words per beat: the chapter is a summary, not scenes.",
            "Dramatise each beat with action, detail and dialogue.",
        )
    elif per_beat < 90:
        scores["pacing"] -= 2
        issue(
            "minor",
            "pacing",
            min(narrative or sentences, key=len),
            "The beats are rushed; several happen in a sentence or two.",
            "Give the key beats room to breathe.",
        )
    elif per_beat > 700:
        scores["pacing"] -= 2
        issue(
            "minor",
            "pacing",
            max(narrative or sentences, key=len),
            "The chapter lingers far longer than its beats need.",
            "Cut the passages that do not move a beat forward.",
        )

    # Repetition.
    counts = Counter(s for s in sentences if len(s) >= 20)
    repeated = [s for s, n in counts.items() if n > 1]
    if len(repeated) >= 3:
        scores["prose"] = min(scores["prose"], 5)
    for sentence in repeated[:2]:
        scores["prose"] -= 1
        issue(
            "major" if len(repeated) >= 3 else "minor",
            "prose",
            sentence,
            "This sentence appears more than once.",
            "Keep one occurrence and vary or cut the others.",
        )

    # Dialogue.
    if '"' not in draft and "\u201c" not in draft:
        scores["character"] -= 2
        issue(
            "minor",
            "character",
            opening,
            "There is no dialogue; the characters never speak for themselves.",
            "Let the characters voice the conflict in a short exchange.",
        )

    # Filler words.
    weak = [s for s in sentences if _is_weak(s)]
    if len(weak) >= 2:
        scores["prose"] -= 1
        issue(
            "minor",
            "prose",
            weak[0],
            "Filler words (suddenly, very, somehow) blunt the prose here.",
            "Say precisely what changes instead of announcing it.",
        )

    # Consistency with the world: the dead do not talk, fixed eye colours stay fixed.
    for character in inp.world.characters:
        forms = name_forms(character.name, character.aliases)
        if _is_dead(character):
            for sentence in sentences:
                if any(
                    re.search(rf"\b{re.escape(f)}\s+(said|asked|answered|replied)\b", sentence)
                    for f in forms
                ):
                    scores["consistency"] = min(scores["consistency"], 4)
                    issue(
                        "major",
                        "consistency",
                        sentence,
                        f"{character.name} is dead by this chapter but speaks here.",
                        f"Remove {character.name}'s lines or make them a memory.",
                    )
                    break
        colour = character.attributes.get("eye_colour", "").lower()
        if not colour:
            continue
        for sentence in sentences:
            for form in forms:
                found = re.search(rf"\b{re.escape(form)}'s\s+{_EYES.pattern}", sentence)
                if found and found.group(1).lower() != colour:
                    scores["consistency"] = min(scores["consistency"], 5)
                    issue(
                        "major",
                        "consistency",
                        sentence,
                        f"{character.name}'s eyes are {colour}, not {found.group(1)}.",
                        f"Describe {character.name}'s eyes as {colour}.",
                    )

    # Findings computed before the review are the reviewer's own issues too.
    for finding in inp.findings:
        quote = _anchor(draft, finding.quote, sentences)
        if finding.severity == "major":
            scores["consistency"] = min(scores["consistency"], 5)
        else:
            scores["consistency"] -= 1
        issue(finding.severity, finding.category, quote, finding.problem, finding.suggestion)

    # A first read is stricter: some first drafts get one hard note on their weakest line.
    quoted = {i.quote for i in issues}
    if inp.revision == 0 and stable_fraction("first-read", inp.chapter, draft) < 0.4:
        candidates = [s for s in weak if s not in quoted] or [
            s
            for s in sorted(narrative, key=len, reverse=True)
            if s not in quoted and _words(s) >= 8
        ]
        if candidates:
            target = candidates[0]
            category = "prose" if _is_weak(target) else "pacing"
            scores[category] = min(scores[category], 5)
            issue(
                "major",
                category,
                target,
                "This line is slack: it tells the reader what to feel instead of showing it."
                if category == "prose"
                else "This sentence carries too much at once and stalls the scene.",
                "Rewrite it with one concrete action or image."
                if category == "prose"
                else "Break it up, or turn it into a moment the characters live through.",
            )

    issues.sort(key=lambda i: i.severity != "major")
    final = Scores(**{k: max(1, min(10, v)) for k, v in scores.items()})
    majors = sum(1 for i in issues if i.severity == "major")
    covered = len(wanted) - len(missing)
    summary = (
        f"The draft names {covered} of {len(wanted)} characters the beats call for"
        f"{'' if beats.location not in unnamed_places else ', but never its setting'}, "
        f"across {len(beats.beats)} beats in about {_words(draft)} words. "
        + (
            f"{majors} major issue{'s' if majors != 1 else ''} must be fixed before it can stand."
            if majors
            else "It holds together and can stand as written."
        )
    )
    return Verdict(scores=final, issues=issues[:20], summary=summary)


def _base_scores(inp: ReviewInput) -> dict[str, int]:
    """Starting scores with a small, repeatable spread; revisions start a notch higher."""
    rng = seeded_rng("review", inp.chapter, inp.revision, inp.draft)
    spread = (0, 0, 1) if inp.revision > 0 else (-1, 0, 0, 1)
    floor = 7 if inp.revision > 0 else 6
    return {
        key: max(floor, min(9, 8 + rng.choice(spread)))
        for key in ("prose", "coherence", "pacing", "character", "consistency")
    }


# --- chapter claims -------------------------------------------------------------------


def chapter_claims(inp: ClaimsInput) -> ChapterClaims:
    """What the draft states, read back from the beats and kept only where the draft
    bears it out, each claim quoting the sentence that shows it."""
    world, beats, draft = inp.world, inp.beats, inp.draft
    sentences = split_sentences(draft)

    def aliases(name: str) -> list[str]:
        character = _find_character(world, name)
        return list(character.aliases) if character else []

    def quote(name: str, *cues: str, fallback: bool = False) -> str | None:
        """The first sentence naming ``name`` and one of ``cues`` (any sentence naming
        it when there are no cues, or none has one and ``fallback`` is set)."""
        naming = [s.strip() for s in sentences if mentions(s, name, aliases(name))]
        for cue in cues:
            hit = next((s for s in naming if cue.lower() in s.lower()), None)
            if hit:
                return hit
        return naming[0] if naming and (fallback or not cues) else None

    claims: dict[str, list[object]] = {
        "present": [],
        "travel": [],
        "deaths": [],
        "knowledge": [],
        "paid_off": [],
        "planted": [],
        "relationships": [],
    }
    people = list(dict.fromkeys([beats.pov, *beats.characters]))
    for name in people:
        said = quote(name)
        if said:
            claims["present"].append(PresenceClaim(character=name, quote=said))
    phrases: list[str] = []
    pov_short = short_name(beats.pov, aliases(beats.pov))
    for event in beats.events:
        if event.kind == "move" and event.target:
            said = quote(event.character, event.target)
            if said:
                claims["travel"].append(
                    TravelClaim(character=event.character, to=event.target, quote=said)
                )
                if event.character == beats.pov:
                    phrases.append(f"{event.character} travels to {event.target}")
        elif event.kind in ("learn", "reveal") and event.target:
            said = quote(event.character, "understood it then", "revealed it", fallback=True)
            if said:
                claims["knowledge"].append(
                    KnowledgeClaim(
                        character=event.character,
                        secret=event.target.strip()[:200],
                        action="learns",
                        quote=said,
                    )
                )
                phrases.append(
                    f"{short_name(event.character)} learns that "
                    f"{_clip(_lower_first(event.target.strip()), 14)}"
                )
        elif event.kind == "death":
            character = _find_character(world, event.character)
            said = quote(event.character, "did not rise", "died")
            if said and (character is None or not _is_dead(character)):
                claims["deaths"].append(DeathClaim(character=event.character, quote=said))
                phrases.append(f"{event.character} dies")
        elif event.kind == "meet" and event.target:
            said = quote(event.character, "met", "offered a hand")
            if said and mentions(draft, event.target, aliases(event.target)):
                claims["relationships"].append(
                    RelationChange(subject=event.character, type="met", object=event.target)
                )
                phrases.append(f"{event.character} meets {event.target}")
    setups = {s.key: s for s in world.open_setups}
    for key in beats.payoff:
        said = quote(pov_short, "mattered", "waited", "came back to", "what it had all been for")
        if said:
            claims["paid_off"].append(PayoffClaim(setup=key, quote=said))
            phrases.append("an old thread comes due")
    for key in beats.plant:
        setup = setups.get(key)
        said = quote(pov_short, "would matter later", "kept it close", "said nothing")
        if setup and said:
            claims["planted"].append(
                PlantClaim(
                    key=key,
                    description=setup.description,
                    payoff_chapter=max(inp.chapter, setup.payoff_chapter),
                    quote=said,
                )
            )
    return ChapterClaims.model_validate(
        {
            "summary": _claims_summary(inp, phrases),
            "new_entities": _new_entities(inp),
            **claims,
        }
    )


def _clip(text: str, words: int) -> str:
    parts = text.rstrip(". ").split()
    return " ".join(parts[:words]) + ("…" if len(parts) > words else "")


def _claims_summary(inp: ClaimsInput, phrases: list[str]) -> str:
    """At most 60 words naming the pov, the location and the key events."""
    beats = inp.beats
    opening = beats.beats[0].summary.strip() if beats.beats else beats.title
    if not mentions(opening, beats.location):
        opening = f"At {beats.location}, {_lower_first(opening)}"
    if not mentions(opening, beats.pov):
        opening = f"{beats.pov}'s chapter: {_lower_first(opening)}"
    sentences = [_full_stop(_clip(opening, 30))]
    if phrases:
        events = "; ".join(phrases)
        sentences.append(_full_stop(events[:1].upper() + events[1:]))
    summary = " ".join(sentences)
    if _words(summary) > 60:
        summary = _clip(summary, 59).rstrip("…") + "."
    return summary[:800]


def _new_entities(inp: ClaimsInput) -> list[NewEntity]:
    """Characters and places the beats name that the world does not know yet."""
    world, beats = inp.world, inp.beats
    known_places = {p.name.lower() for p in world.places}
    found: list[NewEntity] = []
    seen: set[str] = set()
    people = [beats.pov, *beats.characters, *(c for b in beats.beats for c in b.characters)]
    for name in people:
        if not name or name.lower() in seen or _find_character(world, name) is not None:
            continue
        seen.add(name.lower())
        found.append(
            NewEntity(
                name=name,
                kind="character",
                description=f"First appears in chapter {inp.chapter}.",
            )
        )
    places = [
        beats.location,
        *(b.location for b in beats.beats if b.location),
        *(e.target for e in beats.events if e.kind == "move" and e.target),
    ]
    for name in places:
        if not name or name.lower() in seen or name.lower() in known_places:
            continue
        seen.add(name.lower())
        found.append(
            NewEntity(
                name=name,
                kind="location",
                description=f"A place first visited in chapter {inp.chapter}.",
            )
        )
    return found
