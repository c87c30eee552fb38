"""One identity for a record: the text the database writes for the value of its key column.

Holds, queue items, audit entries, restore and evidence lookups all name a record this way
(`id::text` in PostgreSQL: a uuid in lower case with hyphens, an integer without leading zeros; the
stored text in the SQLite demo). What an operator types is parsed as the key column's type and
turned into that text, or refused: no spelling the type accepts can name a record twice.
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa

from retention_pipelines.stores import Dialect


class RecordIdInvalid(ValueError):
    """An id that the domain's key column cannot hold: it names no record."""


def canonical_record_id(connection: sa.Connection, key: sa.Column, given: str) -> str:
    """The record id as the database writes the key column's value as text: `given` parsed as the
    column's type (a uuid in any spelling PostgreSQL accepts → lower case, hyphenated; '007' → '7').
    RecordIdInvalid when the type cannot hold it."""
    if _is_text(key.type):
        if not given:
            raise RecordIdInvalid("an empty record id names no record")
        return given
    value = given.strip()
    if not value:
        raise RecordIdInvalid("an empty record id names no record")
    if not Dialect.of(connection).has_column_types:  # what the type accepts is for Python to say
        python_type = _python_type(key.type)
        try:
            return str(python_type(value)) if python_type is not None else value
        except (TypeError, ValueError):
            raise RecordIdInvalid(f"{given!r} is not a value of the key column {key.name} ({key.type})") from None
    try:
        with connection.begin_nested():
            typed = sa.cast(sa.literal(value, sa.Text), key.type)
            return connection.execute(sa.select(sa.cast(typed, sa.Text))).scalar_one()
    except sa.exc.DBAPIError:
        raise RecordIdInvalid(f"{given!r} is not a value of the key column {key.name} ({key.type})") from None


def _is_text(column_type: sa.types.TypeEngine) -> bool:
    return isinstance(column_type, sa.String) and not isinstance(column_type, sa.Uuid)


def _python_type(column_type: sa.types.TypeEngine):
    try:
        return column_type.python_type
    except NotImplementedError:
        return None


def canonical_record_ids(database, key: sa.Column, given: Iterable[str]) -> list[str]:
    """Several ids at once, in the order given, each canonical (RecordIdInvalid on the first that is not)."""
    with database.connect() as connection:
        return [canonical_record_id(connection, key, value) for value in given]
