"""The SQL adapter of :class:`memory.app.port.AppStore` (SQLite now, Postgres later).

Only portable SQLAlchemy 2.0 is used: no dialect-specific upserts. Races between concurrent
writers are settled by the database's unique constraints and a short retry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, cast, get_args

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from errors import Conflict, InvalidInput, NotFound, StorageError
from memory.app.port import (
    AppStore,
    ChapterRecord,
    ChapterVersionRecord,
    NovelRecord,
    NovelStatus,
    VersionKind,
)
from memory.app.tables import (
    NOVEL_ID_LENGTH,
    VERSION_ID_LENGTH,
    ChapterRow,
    ChapterVersionRow,
    NovelRow,
)
from memory.db import SqlStore, utc
from memory.text import text_length

_STATUSES: frozenset[str] = frozenset(get_args(NovelStatus))
_KINDS: frozenset[str] = frozenset(get_args(VersionKind))
# Concurrent writers can both pick the same next version number; one loses on the
# unique constraint and simply tries again.
_WRITE_ATTEMPTS = 5


def count_words(text: str) -> int:
    """Number of words in ``text`` (hyphenated words and contractions count once; each
    character of Chinese, Japanese or Korean text counts as one)."""
    return text_length(text)


def _now() -> datetime:
    return datetime.now(UTC)


def _novel(row: NovelRow) -> NovelRecord:
    return NovelRecord(
        id=row.id,
        premise=row.premise,
        chapters=row.chapters,
        genre=row.genre,
        title=row.title,
        status=cast(NovelStatus, row.status),
        error=row.error,
        created_at=utc(row.created_at),
        updated_at=utc(row.updated_at),
    )


def _version(row: ChapterVersionRow) -> ChapterVersionRecord:
    return ChapterVersionRecord(
        id=row.id,
        novel_id=row.novel_id,
        number=row.number,
        version=row.version,
        kind=cast(VersionKind, row.kind),
        title=row.title,
        text=row.text,
        created_at=utc(row.created_at),
        claims=row.claims,
        findings=row.findings,
    )


def _chapter(row: ChapterRow, version: ChapterVersionRow) -> ChapterRecord:
    return ChapterRecord(
        novel_id=row.novel_id,
        number=row.number,
        title=row.title,
        summary=row.summary,
        current_version_id=row.current_version_id,
        text=version.text,
        word_count=version.word_count,
        updated_at=utc(row.updated_at),
        findings=version.findings,
    )


def _check_id(kind: str, value: str, limit: int) -> None:
    # Postgres enforces VARCHAR lengths and SQLite does not; checking here keeps both alike.
    if not value or len(value) > limit:
        raise InvalidInput(f"{kind} id must be 1 to {limit} characters", id=value)


def _check_number(number: int) -> None:
    if number < 1:
        raise InvalidInput("chapter numbers start at 1", number=number)


class SqlAppStore(SqlStore, AppStore):
    """App data in a SQL database reached through an async SQLAlchemy engine.

    The engine is usually shared with the SQL world-memory backend, so :meth:`close`
    disposes of it only when ``owns_engine`` is true (see :meth:`from_url`).
    """

    label = "app store"

    # --- novels -----------------------------------------------------------------------

    async def create_novel(
        self,
        novel_id: str,
        premise: str,
        chapters: int,
        genre: str | None,
        *,
        status: NovelStatus = "running",
        title: str | None = None,
    ) -> NovelRecord:
        """Create a session (``running`` unless told otherwise); Conflict if the id is taken."""
        _check_id("novel", novel_id, NOVEL_ID_LENGTH)
        if not premise.strip():
            raise InvalidInput("the premise is empty")
        if chapters < 1:
            raise InvalidInput("a novel needs at least one chapter", chapters=chapters)
        now = _now()
        row = NovelRow(
            id=novel_id,
            premise=premise,
            chapters=chapters,
            genre=genre,
            title=title,
            status=status,
            error=None,
            created_at=now,
            updated_at=now,
        )
        try:
            async with self._transaction() as session:
                if await session.get(NovelRow, novel_id) is not None:
                    raise Conflict(f"novel {novel_id} already exists", id=novel_id)
                session.add(row)
        except IntegrityError as exc:
            # Lost a race with a concurrent create of the same id.
            raise Conflict(f"novel {novel_id} already exists", id=novel_id) from exc
        return _novel(row)

    async def get_novel(self, novel_id: str) -> NovelRecord:
        """The session ``novel_id``; NotFound if unknown."""
        async with self._transaction() as session:
            return _novel(await self._novel_row(session, novel_id))

    async def list_novels(self) -> list[NovelRecord]:
        """All sessions, newest first (ties broken by id for a stable order)."""
        async with self._transaction() as session:
            rows = await session.scalars(
                select(NovelRow).order_by(NovelRow.created_at.desc(), NovelRow.id.desc())
            )
            return [_novel(row) for row in rows]

    async def update_novel(
        self,
        novel_id: str,
        *,
        status: NovelStatus | None = None,
        title: str | None = None,
        error: str | None = None,
    ) -> NovelRecord:
        """Change status, title or error; the error is kept only while status is ``failed``."""
        if status is not None and status not in _STATUSES:
            raise InvalidInput(f"unknown novel status {status!r}", status=status)
        async with self._transaction() as session:
            row = await self._novel_row(session, novel_id)
            if status is not None:
                row.status = status
            if title is not None:
                row.title = title
            if row.status != "failed":
                row.error = None
            elif error is not None:
                row.error = error
            row.updated_at = _now()
            return _novel(row)

    async def update_request(
        self, novel_id: str, *, premise: str, chapters: int, genre: str | None
    ) -> NovelRecord:
        """Replace premise, chapter count and genre; NotFound if unknown."""
        if not premise.strip():
            raise InvalidInput("the premise is empty")
        if chapters < 1:
            raise InvalidInput("a novel needs at least one chapter", chapters=chapters)
        async with self._transaction() as session:
            row = await self._novel_row(session, novel_id)
            row.premise = premise
            row.chapters = chapters
            row.genre = genre
            row.updated_at = _now()
            return _novel(row)

    async def delete_novel(self, novel_id: str) -> None:
        """Delete a session with its chapters and versions; NotFound if unknown."""
        async with self._transaction() as session:
            await self._novel_row(session, novel_id)
            # Delete dependants explicitly in FK order rather than relying on the order in
            # which a database fires its cascades (chapters also reference versions).
            await session.execute(delete(ChapterRow).where(ChapterRow.novel_id == novel_id))
            await session.execute(
                delete(ChapterVersionRow).where(ChapterVersionRow.novel_id == novel_id)
            )
            await session.execute(delete(NovelRow).where(NovelRow.id == novel_id))

    # --- versions ---------------------------------------------------------------------

    async def save_version(
        self, version_id: str, novel_id: str, number: int, kind: VersionKind, title: str, text: str
    ) -> ChapterVersionRecord:
        """Store a chapter text under ``version_id`` with the chapter's next version number.

        Saving an existing id returns the stored version unchanged; Conflict if that id
        belongs to another chapter, NotFound if the novel does not exist.
        """
        _check_id("version", version_id, VERSION_ID_LENGTH)
        _check_number(number)
        if kind not in _KINDS:
            raise InvalidInput(f"unknown version kind {kind!r}", kind=kind)
        words = count_words(text)
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self._transaction() as session:
                    existing = await session.get(ChapterVersionRow, version_id)
                    if existing is not None:
                        return self._replayed(existing, novel_id, number)
                    await self._novel_row(session, novel_id)
                    latest = await session.scalar(
                        select(func.max(ChapterVersionRow.version)).where(
                            ChapterVersionRow.novel_id == novel_id,
                            ChapterVersionRow.number == number,
                        )
                    )
                    row = ChapterVersionRow(
                        id=version_id,
                        novel_id=novel_id,
                        number=number,
                        version=(latest or 0) + 1,
                        kind=kind,
                        title=title,
                        text=text,
                        word_count=words,
                        created_at=_now(),
                    )
                    session.add(row)
                return _version(row)
            except IntegrityError as exc:
                if attempt >= _WRITE_ATTEMPTS:
                    raise StorageError(
                        f"could not store version {version_id}: {exc.orig}", id=version_id
                    ) from exc

    @staticmethod
    def _replayed(row: ChapterVersionRow, novel_id: str, number: int) -> ChapterVersionRecord:
        if (row.novel_id, row.number) != (novel_id, number):
            raise Conflict(
                f"version {row.id} belongs to chapter {row.number} of novel {row.novel_id}",
                id=row.id,
                novel_id=row.novel_id,
                number=row.number,
            )
        return _version(row)

    async def get_version(self, version_id: str) -> ChapterVersionRecord:
        """The version ``version_id``; NotFound if unknown."""
        async with self._transaction() as session:
            row = await session.get(ChapterVersionRow, version_id)
            if row is None:
                raise NotFound("version", version_id)
            return _version(row)

    async def save_review(
        self,
        version_id: str,
        claims: Mapping[str, Any],
        findings: Sequence[Mapping[str, Any]],
    ) -> None:
        """Store a version's claims and findings (replacing earlier ones); NotFound if
        the version is unknown."""
        async with self._transaction() as session:
            row = await session.get(ChapterVersionRow, version_id)
            if row is None:
                raise NotFound("version", version_id)
            row.claims = dict(claims)
            row.findings = [dict(f) for f in findings]

    async def list_versions(self, novel_id: str, number: int) -> list[ChapterVersionRecord]:
        """Every version of one chapter, oldest first (empty if none)."""
        async with self._transaction() as session:
            rows = await session.scalars(
                select(ChapterVersionRow)
                .where(ChapterVersionRow.novel_id == novel_id, ChapterVersionRow.number == number)
                .order_by(ChapterVersionRow.version)
            )
            return [_version(row) for row in rows]

    # --- accepted chapters ------------------------------------------------------------

    async def accept_chapter(
        self, novel_id: str, number: int, version_id: str, title: str, summary: str
    ) -> ChapterRecord:
        """Make ``version_id`` the chapter's standing text, inserting or updating the chapter.

        NotFound for an unknown novel or version; Conflict if the version belongs to
        another chapter.
        """
        _check_number(number)
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self._transaction() as session:
                    await self._novel_row(session, novel_id)
                    version = await session.get(ChapterVersionRow, version_id)
                    if version is None:
                        raise NotFound("version", version_id)
                    self._replayed(version, novel_id, number)
                    row = await session.get(ChapterRow, (novel_id, number))
                    if row is None:
                        row = ChapterRow(novel_id=novel_id, number=number)
                        session.add(row)
                    row.title = title
                    row.summary = summary
                    row.current_version_id = version_id
                    row.updated_at = _now()
                return _chapter(row, version)
            except IntegrityError as exc:
                # Another writer inserted the chapter first; next attempt updates it.
                if attempt >= _WRITE_ATTEMPTS:
                    raise StorageError(
                        f"could not accept chapter {number} of {novel_id}: {exc.orig}",
                        novel_id=novel_id,
                        number=number,
                    ) from exc

    async def get_chapter(self, novel_id: str, number: int) -> ChapterRecord:
        """The accepted chapter; NotFound if it has not been accepted."""
        async with self._transaction() as session:
            found = (
                await session.execute(
                    select(ChapterRow, ChapterVersionRow)
                    .join(ChapterVersionRow, ChapterRow.current_version_id == ChapterVersionRow.id)
                    .where(ChapterRow.novel_id == novel_id, ChapterRow.number == number)
                )
            ).one_or_none()
            if found is None:
                raise NotFound("chapter", f"{novel_id}/{number}")
            return _chapter(found[0], found[1])

    async def list_chapters(self, novel_id: str) -> list[ChapterRecord]:
        """Accepted chapters of a novel in chapter order (empty if none)."""
        async with self._transaction() as session:
            found = await session.execute(
                select(ChapterRow, ChapterVersionRow)
                .join(ChapterVersionRow, ChapterRow.current_version_id == ChapterVersionRow.id)
                .where(ChapterRow.novel_id == novel_id)
                .order_by(ChapterRow.number)
            )
            return [_chapter(chapter, version) for chapter, version in found]

    # --- helpers ----------------------------------------------------------------------

    @staticmethod
    async def _novel_row(session: AsyncSession, novel_id: str) -> NovelRow:
        row = await session.get(NovelRow, novel_id)
        if row is None:
            raise NotFound("novel", novel_id)
        return row
