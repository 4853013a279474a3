"""A book in another language: a Chinese premise runs end to end on the embedded default.

The offline stand-in writes Chinese when a task asks for it, so the whole path runs
offline: prompts carry the language, passages are cut and embedded by characters, length
is counted in characters, claims quote Chinese sentences and the rules check them.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from langchain_core.messages import SystemMessage

from errors import InvalidInput
from memory.text import is_cjk, text_length
from nodes.llm.tasks import render_messages
from nodes.schemas import StoryPlanInput
from nodes.session import detect_language, validate_request
from server.cli import main

PREMISE_ZH = "灯塔看守人林晓月发现，她溺水的哥哥还活在雾港城里。"


def test_the_language_is_given_or_read_from_the_premise() -> None:
    assert detect_language(PREMISE_ZH) == "zh"
    assert detect_language("灯台守のミナは、霧の港で兄を探す。") == "ja"
    assert detect_language("등대지기 미나는 안개 항구에서 오빠를 찾는다.") == "ko"
    assert detect_language("A keeper finds her brother.") == "en"
    assert validate_request(PREMISE_ZH, 2).language == "zh"
    assert validate_request("A keeper.", 2, language="fr").language == "fr"
    assert validate_request("A keeper.", 2, language="zh-Hant").language == "zh-Hant"
    with pytest.raises(InvalidInput, match="language must be a language tag") as error:
        validate_request("A keeper.", 2, language="Chinese!")
    assert error.value.data["field"] == "language"


def test_prompts_ask_for_the_books_language() -> None:
    zh = render_messages(
        "story_plan", StoryPlanInput(language="zh", premise=PREMISE_ZH, chapters=2)
    )
    assert isinstance(zh[0], SystemMessage) and "简体中文" in str(zh[0].content)
    assert '"language":"zh"' in str(zh[1].content)
    en = render_messages("story_plan", StoryPlanInput(premise="A keeper.", chapters=2))
    assert "The book is written in" not in str(en[0].content)


def test_bad_language_on_the_command_line_is_one_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    argv = ["--data-dir", str(data), "write", "--premise", "x", "--chapters", "2"]
    code = main([*argv, "--language", "Klingon!"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "language must be a language tag" in err
    assert not data.exists()


@pytest.mark.slow
def test_a_chinese_book_is_written_checked_and_recorded_offline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    book = tmp_path / "book.md"
    argv = ["--data-dir", str(data), "write", "--premise", PREMISE_ZH, "--chapters", "2"]
    code = main([*argv, "--out", str(book)])
    out, err = capsys.readouterr()
    assert code == 0, err
    session = out.splitlines()[0]
    text = book.read_text(encoding="utf-8")
    assert text.count("\n## ") == 2 and is_cjk(text)
    assert "\n## 第1章 " in text and "\n## 第2章 " in text

    with sqlite3.connect(data / "scribe.db") as db:
        rows = db.execute(
            "select c.number, v.text, v.word_count, v.claims, v.findings from chapters c "
            "join chapter_versions v on v.id = c.current_version_id "
            "where c.novel_id = ? order by c.number",
            (session,),
        ).fetchall()
        names = {
            name
            for (name,) in db.execute(
                "select name from world_entities where novel_id = ? and kind = 'character'",
                (session,),
            )
        }
        located = db.execute(
            "select count(*) from world_facts where novel_id = ? and predicate = 'located_in' "
            "and source_chapter = 2 and not retracted",
            (session,),
        ).fetchone()[0]
    assert [r[0] for r in rows] == [1, 2]
    assert names and all(is_cjk(n) for n in names)
    for _, chapter, words, claims, findings in rows:
        assert is_cjk(chapter)
        # Length is counted in characters, as Chinese writers count it.
        assert words == text_length(chapter) > 500
        read, found = json.loads(claims), json.loads(findings)
        assert read["present"] and {c["character"] for c in read["present"]} <= names
        assert all(c["quote"] in chapter for c in read["present"])
        assert all(f["quote"] in chapter for f in found)
        assert not [f for f in found if f["severity"] == "major"], found
    # Chapter 2's planned journey was claimed from the prose and recorded in the world.
    assert located >= 1
