"""Who a subject is: one normalisation of e-mail addresses, for every place that compares them.

Two spellings name the same subject exactly when `normalise_address` makes them equal. It is
used, and only it, for the address a request for erasure keeps, the keyed hash that names a
subject's archive key, the rows an erasure finds in every domain and the check that nothing of
the subject is left. The database never normalises: SQL cannot do it identically on every
database (PostgreSQL's lower() follows the collation and is not a case fold, trim() removes ASCII
spaces only, normalize(…, NFKC) needs PostgreSQL 13 on a UTF-8 database, SQLite has none of it),
so rows are compared here (`subject_rows`), and acted on by their exact stored values.

What the database does compute is a coarser key (`subject_key`), one that an expression index on
the subject column serves: for an address of printable ASCII alone it is `normalise_address` of
it; every other address shares one key. The rows of a subject are among those filed under their
address's key and that shared one (`lookup_keys`), so an erasure reads a few rows through the
index, whatever the table's size, and compares them here.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from retention_pipelines.policies import DomainPolicy
from retention_pipelines.stores import AppDatabase, Dialect

# Rows read per query of a subject scan: each batch is its own short transaction, so a scan of a
# large table holds no snapshot open and keeps one batch in memory.
SCAN_BATCH = 10_000
# The key that every address holding anything but printable ASCII shares; of the others, only a
# blank address (which names nobody) has it too.
OTHER_KEY = ""
# What the plan of a subject lookup is asked for: an address no one has.
SAMPLE_ADDRESS = "subject-lookup-sample@example.invalid"


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


def subject_key(text: sa.ColumnElement, dialect: Dialect) -> sa.ColumnElement:
    """The SQL of a subject column's key, the one expression its index is on and every lookup
    compares: for an address of printable ASCII (U+0020–U+007E) alone, without its spaces at either
    end and with A–Z in lower case, which is exactly `normalise_address` of it (NFKC and the case
    fold change nothing else there, and a space is its only invisible character); OTHER_KEY for
    every other address; NULL for NULL, so that rows without an address are not in the index's way.
    `subject_key_of` is the same in Python."""
    return sa.case((dialect.outside_printable_ascii(text), sa.literal_column("''", sa.Text)),
                   else_=dialect.ascii_lower(sa.func.trim(text, type_=sa.Text)))


def subject_key_of(stored: str) -> str:
    """What `subject_key` is of a stored address, computed here."""
    if any(not " " <= character <= "~" for character in stored):
        return OTHER_KEY
    return stored.strip(" ").lower()


def lookup_keys(address: str) -> tuple[str, ...]:
    """The keys under which the rows of the subject with this (normalised) address are filed: the
    key of an address of printable ASCII is its normalised form, this address; any other's is
    OTHER_KEY."""
    return tuple(sorted({subject_key_of(address), OTHER_KEY}))


def create_index_statement(table: str, column: str, dialect: Dialect) -> str:
    """The statement that creates the index a domain's subject lookup reads, on `subject_key`."""
    key = dialect.inline_sql(subject_key(sa.column(column, sa.Text), dialect))
    return f"CREATE INDEX {table}_{column}_subject_key_idx ON {table} (({key}))"


def lookup(subject: sa.Column, columns: list[sa.ColumnElement], address: str, dialect: Dialect) -> sa.Select:
    """The statement that reads the rows which may name the subject with this (normalised) address:
    those filed under its `lookup_keys`, served by the index on `subject_key`."""
    return sa.select(*columns).where(subject_key(subject, dialect).in_(lookup_keys(address)))


@dataclass(frozen=True)
class SubjectIndex:
    """Whether a domain's subject lookup reads an index: the statement that creates one, and the
    index its plan reads (None where it reads none, or where the database shows no plans)."""

    domain: str
    checked: bool  # False on a database that shows no plans (the SQLite demo): not known
    index: str | None
    create_index: str

    @property
    def missing(self) -> bool:
        return self.checked and self.index is None


def subject_index(database: AppDatabase, policy: DomainPolicy, table: sa.Table) -> SubjectIndex:
    """Does an index serve the subject lookup of this domain (a policy with a subject column)? Asked
    of the plan of the lookup itself (`lookup` with SAMPLE_ADDRESS), so that an index which exists but
    on another expression, or of another collation, is not taken for one."""
    dialect = database.dialect
    statement = create_index_statement(policy.table, policy.subject_column, dialect)
    if not dialect.shows_plans:
        return SubjectIndex(policy.name, False, None, statement)
    subject = table.c[policy.subject_column]
    query = lookup(subject, [subject], SAMPLE_ADDRESS, dialect)
    with database.connect() as connection:
        read = dialect.indexes_read(connection, query, policy.table)
    return SubjectIndex(policy.name, True, read[0] if read else None, statement)


def subject_index_problem(found: SubjectIndex, policy: DomainPolicy) -> str:
    """The line that says a domain's subject lookup has no index, naming the statement to run."""
    return (f"{policy.source}: domain {policy.name}, field subject_column: no index on table {policy.table} "
            f"serves the subject lookup, so every erasure reads the whole table; the app's schema should "
            f"create it: {found.create_index}")


@dataclass(frozen=True)
class Subject:
    """Whom an erasure looks for: a stored address names them when `accepts` says so; `address`, their
    normalised address, where it is known, finds their rows through the index (None: only a keyed
    hash of it is left, and every row with an address is read)."""

    accepts: Callable[[str], bool]
    address: str | None

    def __call__(self, stored: str) -> bool:
        return self.accepts(stored)

    def __repr__(self) -> str:  # never the address, in a traceback or a log line
        return f"Subject(address={'known' if self.address is not None else 'gone'})"


@dataclass(frozen=True)
class SubjectRow:
    """A row of a domain that names the subject: its key, its stored address and its clock."""

    pk: object
    stored: str
    clock: datetime


def subject_rows(database: AppDatabase, table: sa.Table, pk: sa.Column, subject: sa.Column, clock: sa.Column,
                 is_subject: Subject) -> Iterator[SubjectRow]:
    """Every row whose stored address `is_subject` accepts. With the subject's (normalised)
    address, the rows filed under its `lookup_keys` are read through the index on `subject_key`
    and compared here. Without it (a request whose address is gone, named by its keyed hash alone)
    every row with an address is read, in keyset batches over the primary key (about a second per
    million rows)."""
    if is_subject.address is not None:
        query = lookup(subject, [pk, subject, clock], is_subject.address, database.dialect)
        with database.connect() as connection:
            for key, stored, at in connection.execution_options(yield_per=SCAN_BATCH).execute(query):
                if is_subject(stored):
                    yield SubjectRow(key, stored, database.read_time(at))
        return
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


__all__ = ["OTHER_KEY", "SAMPLE_ADDRESS", "SCAN_BATCH", "Subject", "SubjectIndex", "SubjectRow",
           "create_index_statement", "lookup", "lookup_keys", "normalise_address", "spellings", "subject_index",
           "subject_index_problem", "subject_key", "subject_key_of", "subject_rows"]
