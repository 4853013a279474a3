"""Book export: accepted chapters to one Markdown document or an EPUB 3 file.

Chapter texts are Markdown-ish prose: paragraphs separated by blank lines, ``*italics*``
and ``**bold**``, and scene breaks written as ``***``, ``* * *`` or ``---``. The EPUB
renderer supports exactly that and escapes everything else.
"""

from __future__ import annotations

import html
import os
import re
import tempfile
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from urllib.parse import unquote

from ebooklib import epub

from errors import InvalidInput, StorageError
from memory.app.port import ChapterRecord
from memory.text import is_cjk

EPUB_MIMETYPE = b"application/epub+zip"
_CONTAINER_NS = "urn:oasis:names:tc:opendocument:xmlns:container"
_OPF_NS = "http://www.idpf.org/2007/opf"
_DC_NS = "http://purl.org/dc/elements/1.1/"
_XHTML_NS = "http://www.w3.org/1999/xhtml"
_XHTML_TYPE = "application/xhtml+xml"

# Characters XML 1.0 forbids; a stray one would make a chapter document unreadable.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n+")
_SCENE_BREAK = re.compile(r"^(?:\*\s*){3,}$|^(?:-\s*){3,}$")
_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*", re.DOTALL)
_ITALIC = re.compile(r"(?<![*\w])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![*\w])", re.DOTALL)

_STYLESHEET = """\
body { font-family: serif; line-height: 1.5; margin: 0 5%; }
h1, h2 { text-align: center; margin: 2em 0 1em; }
p { margin: 0; text-indent: 1.5em; }
p.first, .title-page p { text-indent: 0; }
.title-page { text-align: center; margin-top: 20%; }
.title-page .author { margin-top: 2em; font-variant: small-caps; }
.title-page .logline { margin-top: 2em; font-style: italic; }
hr.scene-break { border: none; text-align: center; margin: 1.5em 0; }
hr.scene-break::after { content: "* * *"; }
"""


def _ordered(chapters: Sequence[ChapterRecord]) -> list[ChapterRecord]:
    """Chapters sorted by number; InvalidInput for an empty book or repeated numbers."""
    if not chapters:
        raise InvalidInput("the book has no accepted chapters to export")
    ordered = sorted(chapters, key=lambda chapter: chapter.number)
    numbers = [chapter.number for chapter in ordered]
    if len(set(numbers)) != len(numbers):
        raise InvalidInput("chapter numbers repeat", numbers=numbers)
    return ordered


def chapter_heading(chapter: ChapterRecord) -> str:
    """``Chapter 3: The Storm`` (``第3章 夜雾`` in a chapter written in Chinese or
    Japanese); a title that already names the chapter is used as is."""
    title = chapter.title.strip()
    if is_cjk(chapter.text) and not _HANGUL.search(chapter.text[:200]):
        if title.startswith("第"):
            return title
        return f"第{chapter.number}章 {title}".rstrip()
    if not title:
        return f"Chapter {chapter.number}"
    if title.lower().startswith("chapter"):
        return title
    return f"Chapter {chapter.number}: {title}"


_HANGUL = re.compile(r"[\uac00-\ud7af]")


def _paragraphs(text: str) -> list[str]:
    """Blank-line separated paragraphs, with soft line breaks folded into spaces."""
    normalized = _XML_INVALID.sub("", text.replace("\r\n", "\n").replace("\r", "\n")).strip()
    if not normalized:
        return []
    return [
        " ".join(line.strip() for line in block.split("\n") if line.strip())
        for block in _PARAGRAPH_BREAK.split(normalized)
        if block.strip()
    ]


def book_to_markdown(
    title: str, chapters: Sequence[ChapterRecord], *, logline: str | None = None
) -> str:
    """The whole book as one Markdown document: ``# title``, logline, ``## Chapter n: ...``."""
    parts = [f"# {title.strip()}"]
    if logline and logline.strip():
        parts.append(f"*{logline.strip()}*")
    for chapter in _ordered(chapters):
        parts.append(f"## {chapter_heading(chapter)}")
        body = "\n\n".join(_paragraphs(chapter.text))
        if body:
            parts.append(body)
    return "\n\n".join(parts) + "\n"


def _inline(text: str) -> str:
    """Escape ``text`` for XHTML, then render ``**bold**`` and ``*italics*``."""
    # Escaping first is safe: it never produces or removes asterisks.
    escaped = html.escape(text, quote=False)
    escaped = _BOLD.sub(r"<strong>\1</strong>", escaped)
    return _ITALIC.sub(r"<em>\1</em>", escaped)


def _escape(text: str) -> str:
    return html.escape(_XML_INVALID.sub("", text), quote=False)


def _chapter_body(chapter: ChapterRecord) -> str:
    parts = [f"<h2>{_escape(chapter_heading(chapter))}</h2>"]
    first = True
    for paragraph in _paragraphs(chapter.text):
        if _SCENE_BREAK.match(paragraph):
            parts.append('<hr class="scene-break"/>')
            first = True
            continue
        css = ' class="first"' if first else ""
        parts.append(f"<p{css}>{_inline(paragraph)}</p>")
        first = False
    return "<html><body>" + "\n".join(parts) + "</body></html>"


def _title_body(title: str, author: str, logline: str | None) -> str:
    parts = [
        '<section class="title-page">',
        f"<h1>{_escape(title)}</h1>",
        f'<p class="author">{_escape(author)}</p>',
    ]
    if logline and logline.strip():
        parts.append(f'<p class="logline">{_escape(logline.strip())}</p>')
    parts.append("</section>")
    return "<html><body>" + "\n".join(parts) + "</body></html>"


def book_to_epub(
    title: str,
    chapters: Sequence[ChapterRecord],
    out: Path,
    *,
    author: str = "InfiniteScribe",
    language: str = "en",
    logline: str | None = None,
    identifier: str,
) -> None:
    """Write an EPUB 3 book (title page, one XHTML per chapter, nav and NCX) to ``out``.

    The file is written next to ``out`` and renamed into place, so a failed export never
    leaves a truncated book behind. Raises InvalidInput for an empty book and
    StorageError when the file cannot be written.
    """
    ordered = _ordered(chapters)
    # Metadata goes through lxml, which rejects characters XML forbids.
    title = _XML_INVALID.sub("", title)
    author = _XML_INVALID.sub("", author)
    logline = _XML_INVALID.sub("", logline) if logline else None
    book = epub.EpubBook()
    book.set_identifier(identifier)
    book.set_title(title)
    book.set_language(language)
    book.add_author(author)
    if logline and logline.strip():
        book.add_metadata("DC", "description", logline.strip())

    style = epub.EpubItem(
        uid="style", file_name="style/book.css", media_type="text/css", content=_STYLESHEET
    )
    book.add_item(style)

    title_page = epub.EpubHtml(uid="title-page", file_name="title.xhtml", title=title)
    title_page.content = _title_body(title, author, logline)
    title_page.add_item(style)
    book.add_item(title_page)

    documents = []
    for chapter in ordered:
        document = epub.EpubHtml(
            uid=f"chapter-{chapter.number}",
            file_name=f"chapter-{chapter.number:04d}.xhtml",
            title=_XML_INVALID.sub("", chapter_heading(chapter)),
        )
        document.content = _chapter_body(chapter)
        document.add_item(style)
        book.add_item(document)
        documents.append(document)

    book.toc = [epub.Link(doc.file_name, doc.title, doc.id) for doc in documents]
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = [title_page, "nav", *documents]

    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        epub.write_epub(
            tmp_name,
            book,
            {"raise_exceptions": True, "mtime": datetime.now(UTC), "epub2_guide": False},
        )
        os.replace(tmp_name, out)
    except OSError as exc:
        raise StorageError(f"could not write {out}: {exc}", path=str(out)) from exc
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)


def _parse_xml(data: bytes, name: str, problems: list[str]) -> ET.Element | None:
    try:
        return ET.fromstring(data)
    except ET.ParseError as exc:
        problems.append(f"{name}: not well-formed XML ({exc})")
        return None


def _check_mimetype(archive: zipfile.ZipFile, problems: list[str]) -> None:
    infos = archive.infolist()
    if not infos or infos[0].filename != "mimetype":
        problems.append("the first zip entry is not 'mimetype'")
        return
    first = infos[0]
    if first.compress_type != zipfile.ZIP_STORED:
        problems.append("'mimetype' is compressed; it must be stored")
    if first.extra:
        problems.append("'mimetype' has a zip extra field")
    if archive.read(first) != EPUB_MIMETYPE:
        problems.append("'mimetype' does not contain 'application/epub+zip'")


def _opf_path(archive: zipfile.ZipFile, names: set[str], problems: list[str]) -> str | None:
    if "META-INF/container.xml" not in names:
        problems.append("META-INF/container.xml is missing")
        return None
    container = _parse_xml(archive.read("META-INF/container.xml"), "container.xml", problems)
    if container is None:
        return None
    rootfile = container.find(f"{{{_CONTAINER_NS}}}rootfiles/{{{_CONTAINER_NS}}}rootfile")
    full_path = rootfile.get("full-path") if rootfile is not None else None
    if not full_path:
        problems.append("container.xml names no rootfile")
        return None
    if full_path not in names:
        problems.append(f"the package document {full_path} is missing")
        return None
    return full_path


def _check_package(
    archive: zipfile.ZipFile, names: set[str], opf_path: str, problems: list[str]
) -> None:
    package = _parse_xml(archive.read(opf_path), opf_path, problems)
    if package is None:
        return
    if package.tag != f"{{{_OPF_NS}}}package":
        problems.append(f"{opf_path}: root element is not an OPF package")
        return
    if not (package.get("version") or "").startswith("3"):
        problems.append(f"{opf_path}: package version is not 3.x")
    metadata = package.find(f"{{{_OPF_NS}}}metadata")
    if metadata is None:
        problems.append(f"{opf_path}: no metadata")
    else:
        for field in ("identifier", "title", "language"):
            element = metadata.find(f"{{{_DC_NS}}}{field}")
            if element is None or not (element.text or "").strip():
                problems.append(f"{opf_path}: dc:{field} is missing")
        unique = package.get("unique-identifier")
        ids = {el.get("id") for el in metadata.findall(f"{{{_DC_NS}}}identifier")}
        if unique is None or unique not in ids:
            problems.append(f"{opf_path}: unique-identifier does not name a dc:identifier")

    base = PurePosixPath(opf_path).parent
    manifest: dict[str, tuple[str, str]] = {}
    nav_items = 0
    for item in package.iterfind(f"{{{_OPF_NS}}}manifest/{{{_OPF_NS}}}item"):
        item_id, href = item.get("id"), item.get("href")
        media_type = item.get("media-type") or ""
        if not item_id or not href:
            problems.append(f"{opf_path}: a manifest item lacks id or href")
            continue
        if item_id in manifest:
            problems.append(f"{opf_path}: manifest id {item_id} repeats")
        path = str(base / unquote(href)) if str(base) != "." else unquote(href)
        manifest[item_id] = (path, media_type)
        if "nav" in (item.get("properties") or "").split():
            nav_items += 1
        if path not in names:
            problems.append(f"manifest item {item_id} ({path}) is missing from the archive")
        elif media_type in (_XHTML_TYPE, "application/x-dtbncx+xml"):
            document = _parse_xml(archive.read(path), path, problems)
            if (
                document is not None
                and media_type == _XHTML_TYPE
                and document.tag != f"{{{_XHTML_NS}}}html"
            ):
                problems.append(f"{path}: root element is not XHTML <html>")
    if nav_items != 1:
        problems.append(f"{opf_path}: expected exactly one nav document, found {nav_items}")

    spine = package.find(f"{{{_OPF_NS}}}spine")
    if spine is None:
        problems.append(f"{opf_path}: no spine")
        return
    toc = spine.get("toc")
    if toc is not None and toc not in manifest:
        problems.append(f"{opf_path}: spine toc {toc} is not in the manifest")
    itemrefs = spine.findall(f"{{{_OPF_NS}}}itemref")
    if not itemrefs:
        problems.append(f"{opf_path}: the spine is empty")
    for itemref in itemrefs:
        idref = itemref.get("idref")
        if idref not in manifest:
            problems.append(f"{opf_path}: spine item {idref} is not in the manifest")


def validate_epub(path: Path) -> list[str]:
    """Structural problems of the EPUB at ``path``; an empty list means none were found.

    Checks the zip container, the ``mimetype`` entry (first, stored, exact content),
    ``META-INF/container.xml`` → package document, required metadata, that every manifest
    item exists, that spine items are in the manifest, a single nav document, and that
    every XHTML/NCX document is well-formed XML.
    """
    if not path.is_file():
        return [f"{path} does not exist"]
    if not zipfile.is_zipfile(path):
        return [f"{path} is not a zip archive"]
    problems: list[str] = []
    try:
        with zipfile.ZipFile(path) as archive:
            if (broken := archive.testzip()) is not None:
                problems.append(f"zip entry {broken} is corrupt")
            names = set(archive.namelist())
            _check_mimetype(archive, problems)
            opf_path = _opf_path(archive, names, problems)
            if opf_path is not None:
                _check_package(archive, names, opf_path, problems)
    except (zipfile.BadZipFile, OSError) as exc:
        problems.append(f"cannot read {path}: {exc}")
    return problems
