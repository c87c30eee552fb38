"""Who a subject is: one normalisation of e-mail addresses, for every place that compares them.

Two spellings name the same subject exactly when `normalise_address` makes them equal. It is
used, and only it, for the address a request for erasure keeps, the keyed hash that names a
subject's archive key, the rows an erasure finds in every domain and the check that nothing of
the subject is left. The database never normalises: SQL cannot do it identically on every
database (PostgreSQL's lower() follows the collation and is not a case fold, trim() removes ASCII
spaces only, normalize(…, NFKC) needs PostgreSQL 13 on a UTF-8 database, SQLite has none of it),
so rows are read and compared here (`subject_rows`), and acted on by their exact stored values.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from retention_pipelines.stores import AppDatabase

# Rows read per query of a subject scan: each batch is its own short transaction, so a scan of a
# large table holds no snapshot open and keeps one batch in memory.
SCAN_BATCH = 10_000


def normalise_address(value: str) -> str:
    """The canonical form of an address: Unicode NFKC, case-folded, without invisible characters
    at either end. NFKC makes compatibility forms one (fullwidth 'ＡＮＮ＠' is 'ann@', the ligature
    'ﬁ' is 'fi', a no-break space is a space); the case fold is the full, locale-free one (ß and
    'SS' are both 'ss'; a Turkish dotted İ is not a plain i), applied between two NFKC passes
    because each can produce what the other changes ('㏇' is 'Co.' only after NFKC). Trimmed are
    whitespace of any kind (str.isspace: tabs, newlines, U+00A0, U+2003, U+3000 …), control
    characters and format characters (zero-width space U+200B, joiners, U+FEFF, direction marks):
    all are invisible, none can begin or end a valid address, and they are what copying an
    address from a mail or a web form adds. Inside the address nothing is removed: what is there
    is what the app stored and sent mail to."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", value).casefold())
    start, end = 0, len(folded)
    while start < end and _invisible(folded[start]):
        start += 1
    while end > start and _invisible(folded[end - 1]):
        end -= 1
    return folded[start:end]


def _invisible(character: str) -> bool:
    return character.isspace() or unicodedata.category(character) in ("Cc", "Cf")


@dataclass(frozen=True)
class SubjectRow:
    """A row of a domain that names the subject: its key, its stored address and its clock."""

    pk: object
    stored: str
    clock: datetime


def subject_rows(database: AppDatabase, table: sa.Table, pk: sa.Column, subject: sa.Column, clock: sa.Column,
                 is_subject: Callable[[str], bool]) -> Iterator[SubjectRow]:
    """Every row whose stored address `is_subject` accepts, read in keyset batches over the
    primary key. This reads every row with an address (one index-ordered pass over the table, about
    a second per million rows), where an index on the address column would read a few: no SQL
    expression is equal to `normalise_address` on every database, and any coarser one would have to
    be proven a superset of it for every Unicode spelling. An erasure is rare and its run bounded
    by batches, so it pays the pass twice (to find the rows, and to check that none is left), and
    then acts on the rows through the index, by the exact addresses found (`spellings`)."""
    last = None
    while True:
        query = sa.select(pk, subject, clock).where(subject.is_not(None))
        if last is not None:
            query = query.where(pk > last)
        with database.connect() as connection:
            rows = connection.execute(query.order_by(pk).limit(SCAN_BATCH)).all()
        if not rows:
            return
        for key, stored, at in rows:
            if is_subject(stored):
                yield SubjectRow(key, stored, database.read_time(at))
        last = rows[-1][0]


def spellings(rows: list[SubjectRow]) -> tuple[str, ...]:
    """The stored addresses of these rows, each once: compared by the database byte for byte, they
    choose exactly these rows (and any written since with the same address)."""
    return tuple(sorted({row.stored for row in rows}))


__all__ = ["SCAN_BATCH", "SubjectRow", "normalise_address", "spellings", "subject_rows"]
