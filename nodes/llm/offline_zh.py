"""The offline model's Chinese: every writing task answered in simplified Chinese.

Used when a task's input says ``language: zh`` (or a ``zh-*`` tag), so a Chinese book runs
end to end without a model: the plan, the world (Chinese names), the beats, the prose, the
claims that quote it and the review. Sentences are composed from small pools of parts,
seeded per chapter, so chapters do not repeat one another word for word (the reviewer's
repetition check would send them back, as it should).
"""

from __future__ import annotations

import random
import re

from nodes.llm.names import seeded_rng
from nodes.schemas import (
    Beat,
    BeatsInput,
    ChapterBeats,
    ChapterClaims,
    ChapterOutline,
    CharacterSeed,
    ClaimsInput,
    DraftInput,
    PlaceSeed,
    PlannedEvent,
    RelationSeed,
    ReviewInput,
    Scores,
    SetupSeed,
    StoryBible,
    StoryPlan,
    StoryPlanInput,
    Verdict,
    WorldSeed,
    WorldSeedInput,
)

PEOPLE = ("林晓月", "陈远舟", "苏青禾", "韩墨言", "周雨桐", "顾长风")
PLACES = ("白塔灯塔", "雾港", "旧码头", "盐市", "北岸渔村", "潮声书院")
ITEMS = ("铜钥匙", "旧罗盘", "褪色的信")
TITLES = ("雾港来信", "潮汐之下", "灯塔守夜人", "白塔的秘密", "北岸旧事")
CHAPTER_TITLES = ("夜雾", "来信", "旧码头", "潮声", "灯火", "归来", "暗流", "破晓", "回响", "余烬")

_TIMES = (
    "清晨",
    "午后",
    "黄昏时分",
    "夜深的时候",
    "天刚蒙蒙亮",
    "雨停之后",
    "潮水退去时",
    "钟声响过之后",
)
_SKY = (
    "海雾从港口一直漫到山脚",
    "细雨打在屋檐上",
    "海风带着咸味吹进窗缝",
    "云层压得很低",
    "远处的浪一阵高过一阵",
    "月光在水面上碎成一片",
    "街上的灯一盏接一盏亮起",
    "码头上传来缆绳的吱呀声",
)
_ACTS = (
    "慢慢走到窗前",
    "把灯芯剪短了一些",
    "翻开那本旧账册",
    "在桌边坐了很久",
    "沿着石阶往下走",
    "把外套裹得更紧",
    "停下来听了听动静",
    "用袖子擦去玻璃上的水汽",
    "数着墙上的裂缝",
    "把门闩重新插好",
)
_THOUGHTS = (
    "心里却一直放不下那件事",
    "想起了很多年前的一个冬天",
    "觉得有什么地方不对劲",
    "第一次感到自己离真相很近",
    "不知道该相信谁",
    "暗暗下定了决心",
    "告诉自己不能再等下去",
    "隐约听见有人在叫自己的名字",
)
_LINES = (
    "“你听见了吗？”",
    "“今晚不太平。”",
    "“有些事，我早该告诉你。”",
    "“别回头，一直往前走。”",
    "“这不是第一次了。”",
    "“等天亮再说吧。”",
    "“我们没有多少时间了。”",
    "“你还记得那封信吗？”",
)
_REPLIES = ("低声说", "轻声回答", "皱着眉说", "停了停才说", "看着远处说")
_SENT = re.compile(r"[^。！？\n]+[。！？]+[”」』]?")


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENT.findall(text) if s.strip()]


def _pick(rng: random.Random, pool: tuple[str, ...]) -> str:
    return pool[rng.randrange(len(pool))]


# --- plan and world ------------------------------------------------------------------


def story_plan(inp: StoryPlanInput) -> StoryPlan:
    """A bible and an outline in Chinese, from the premise."""
    rng = seeded_rng("zh-plan", inp.premise, inp.chapters, inp.notes or "")
    title = _pick(rng, TITLES)
    outline = [
        ChapterOutline(
            number=n,
            title=CHAPTER_TITLES[(n - 1 + rng.randrange(3)) % len(CHAPTER_TITLES)],
            summary=(
                f"第{n}章：{inp.premise[:60]}"
                + ("的故事由此开始。" if n == 1 else "，事情又向前推进了一步。")
            ),
        )
        for n in range(1, inp.chapters + 1)
    ]
    bible = StoryBible(
        title=title,
        logline=inp.premise[:600],
        genre=inp.genre or "悬疑",
        tone="沉静而紧张",
        point_of_view="第三人称有限视角",
        themes=["秘密", "归来", "守望"],
    )
    return StoryPlan(bible=bible, outline=outline)


def world_seed(inp: WorldSeedInput) -> WorldSeed:
    """A small Chinese world sized to the book: places, people, an item, one set-up."""
    chapters = len(inp.outline) or 1
    places = [
        PlaceSeed(name=name, description=f"{name}是故事里常去的地方，海雾终年不散。")
        for name in PLACES[: min(len(PLACES), 2 + chapters)]
    ]
    people = [
        CharacterSeed(
            name=name,
            role="主角" if i == 0 else "配角",
            description=f"{name}在{places[i % len(places)].name}长大，话不多。",
            fixed={"eye_colour": ("黑色", "褐色", "灰色")[i % 3]},
            location=places[i % len(places)].name,
        )
        for i, name in enumerate(PEOPLE[: min(len(PEOPLE), 3 + chapters)])
    ]
    items = [PlaceSeed(name=ITEMS[0], description="一把生了锈的铜钥匙，没人知道它开哪扇门。")]
    setups = [
        SetupSeed(
            key="bronze-key",
            description="铜钥匙能打开白塔顶层的门",
            plant_chapter=1,
            payoff_chapter=chapters,
            entities=[ITEMS[0]],
        )
    ]
    relations = [RelationSeed(subject=people[0].name, type="friend_of", object=people[1].name)]
    return WorldSeed(
        characters=people, locations=places, items=items, relationships=relations, setups=setups
    )


def chapter_beats(inp: BeatsInput) -> ChapterBeats:
    """Three beats in Chinese for the chapter; the point-of-view character moves in
    even chapters; set-ups due here are planted or paid off."""
    rng = seeded_rng("zh-beats", inp.chapter, inp.outline.title)
    living = [c for c in inp.world.characters if c.attributes.get("status", "alive") != "dead"]
    pov = living[0].name if living else PEOPLE[0]
    others = [c.name for c in living[1:3]]
    here = (living[0].location if living else None) or (
        inp.world.places[0].name if inp.world.places else PLACES[0]
    )
    places = [p.name for p in inp.world.places if p.kind == "location" and p.name != here]
    events: list[PlannedEvent] = []
    location = here
    if inp.chapter % 2 == 0 and places:
        location = places[rng.randrange(len(places))]
        events.append(PlannedEvent(kind="move", character=pov, target=location))
    setups = inp.world.open_setups
    plant = [s.key for s in setups if s.plant_chapter == inp.chapter]
    payoff = [s.key for s in setups if s.payoff_chapter == inp.chapter and s.key not in plant]
    beats = [
        Beat(summary=f"{pov}在{here}察觉到异样。", characters=[pov], location=here),
        Beat(summary=f"{pov}与{'、'.join(others) or '自己'}谈起往事。", characters=[pov, *others]),
        Beat(summary=f"{pov}做出决定，夜色渐深。", characters=[pov], location=location),
    ]
    return ChapterBeats(
        chapter=inp.chapter,
        title=inp.outline.title,
        pov=pov,
        location=location,
        characters=[pov, *others],
        beats=beats,
        plant=plant,
        payoff=payoff,
        events=events,
    )


# --- prose -----------------------------------------------------------------------------


def _description(rng: random.Random, who: str, place: str) -> str:
    """Two sentences: the hour and the weather, then someone doing and thinking."""
    when, sky = _pick(rng, _TIMES), _pick(rng, _SKY)
    return f"{when}，{sky}。{who}在{place}{_pick(rng, _ACTS)}，{_pick(rng, _THOUGHTS)}。"


def chapter_draft(inp: DraftInput) -> str:
    """The chapter in Chinese, about ``target_words`` characters, one or more
    paragraphs per beat, with the planned move, plant and pay-off in words."""
    rng = seeded_rng("zh-draft", inp.model_dump(mode="json"))
    beats = inp.beats
    pov = beats.pov
    start = beats.beats[0].location or beats.location
    target = max(200, inp.target_words)
    paragraphs: list[str] = [f"{_description(rng, pov, start)}{pov}站在{start}，望着外面出神。"]
    setups = {s.key: s for s in inp.world.open_setups}
    for key in beats.plant:
        desc = setups[key].description if key in setups else key
        paragraphs.append(f"{pov}注意到了一件日后会很重要的事：{desc}。{pov}没有对任何人说。")
    for event in beats.events:
        if event.kind == "move" and event.target:
            paragraphs.append(
                f"{event.character}动身前往{event.target}。路上{_pick(rng, _SKY)}，"
                f"{event.character}一句话也没有说。傍晚，{event.character}到了{event.target}。"
            )
    for index, beat in enumerate(beats.beats):
        others = [c for c in beat.characters if c != pov]
        paragraph = f"{beat.summary}{_description(rng, pov, beat.location or start)}"
        if others:
            paragraph += f"{others[0]}{_pick(rng, _REPLIES)}：{_pick(rng, _LINES)}"
        paragraphs.append(paragraph)
        if index == len(beats.beats) - 1:
            for key in beats.payoff:
                desc = setups[key].description if key in setups else key
                paragraphs.append(f"{pov}终于明白了那件事的意义：{desc}。多年的疑问有了答案。")
    while sum(len(p) for p in paragraphs) < target:
        who = _pick(rng, (pov, *beats.characters))
        paragraphs.insert(
            -1, _description(rng, who, beats.location) + _description(rng, who, start)
        )
    return "\n\n".join(paragraphs)


def chapter_claims(inp: ClaimsInput) -> ChapterClaims:
    """What the Chinese draft states, each claim quoting the sentence that shows it."""
    sentences = _sentences(inp.draft)
    beats = inp.beats

    def quote(*needles: str) -> str | None:
        return next((s for s in sentences if all(n in s for n in needles)), None)

    present = [
        {"character": name, "quote": said}
        for name in dict.fromkeys([beats.pov, *beats.characters])
        if (said := quote(name))
    ]
    travel = [
        {"character": e.character, "to": e.target, "quote": said}
        for e in beats.events
        if e.kind == "move" and e.target and (said := quote(e.character, e.target))
    ]
    paid = [
        {"setup": key, "quote": said}
        for key in beats.payoff
        if (said := quote("终于明白了那件事的意义"))
    ]
    setups = {s.key: s for s in inp.world.open_setups}
    planted = [
        {
            "key": key,
            "description": setups[key].description,
            "payoff_chapter": max(inp.chapter, setups[key].payoff_chapter),
            "quote": said,
        }
        for key in beats.plant
        if key in setups and (said := quote("日后会很重要"))
    ]
    summary = f"{beats.pov}在{beats.location}：" + "".join(b.summary for b in beats.beats)
    return ChapterClaims.model_validate(
        {
            "summary": summary[:800],
            "present": present,
            "travel": travel,
            "paid_off": paid,
            "planted": planted,
        }
    )


def chapter_review(inp: ReviewInput) -> Verdict:
    """Steady scores and a Chinese summary; the findings given are the issues."""
    rng = seeded_rng("zh-review", inp.chapter, inp.revision, inp.draft)
    floor = 7 if inp.revision else 6
    scores = {
        key: max(floor, min(9, 8 + rng.choice((-1, 0, 0, 1))))
        for key in ("prose", "coherence", "pacing", "character", "consistency")
    }
    if not _sentences(inp.draft):
        return Verdict(scores=Scores(**dict.fromkeys(scores, 1)), summary="草稿是空的。")
    if inp.findings:
        scores["consistency"] = min(scores["consistency"], 5)
    summary = "本章氛围统一，人物动机清楚。" + (
        "但系统发现了需要修改的一致性问题。" if inp.findings else "可以接受。"
    )
    return Verdict(scores=Scores(**scores), summary=summary, issues=list(inp.findings[:8]))
