"""Migration rollback: the retention tables taken back to an earlier migration, refused while the
downgrade would drop data the later migrations hold.

What a downgrade drops is not read from the migration scripts but seen: the downgrade is tried on
a copy that is thrown away — on PostgreSQL in a savepoint rolled back (its DDL is transactional),
on SQLite on a copy of the database file — and the tables and columns it took away are compared
with the live ones. A dropped table with rows, or a dropped column with a value in any row, is
data lost; the caller decides (`retention db downgrade --drop-data`). On PostgreSQL the trial, the
count and the real downgrade are one transaction, so what was counted is what goes, and the
downgrade is whole or not at all.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory

from retention_pipelines.schema import MIGRATIONS, _config, current_revision
from retention_pipelines.schema.tables import VERSION_TABLE

BASE = "base"  # Alembic's name for "no migration": every retention table dropped
# Tables whose rows are derived from others and made again after an upgrade: the evidence index,
# which the index job rebuilds from the audit log (its state row is the migration's own seed).
REBUILT = frozenset({"retention_audit_record_index", "retention_audit_record_index_state"})


class DowngradeRefused(ValueError):
    """The downgrade as asked cannot be done: an unknown or later revision. Nothing was changed."""


@dataclass(frozen=True)
class LostData:
    """A table (column None) or a column the downgrade drops, and how many rows hold data there."""

    table: str
    column: str | None
    rows: int

    def __str__(self) -> str:
        if self.column is None:
            return f"table {self.table} ({self.rows} rows)"
        return f"column {self.table}.{self.column} ({self.rows} rows with a value)"


class DowngradeWouldDropData(Exception):
    def __init__(self, target: str, lost: list[LostData]):
        self.target, self.lost = target, lost
        super().__init__(f"downgrading to {target} would drop data the later migrations hold: "
                         + ", ".join(map(str, lost)))


def revisions() -> list[str]:
    """Every migration, oldest first."""
    return [script.revision for script in reversed(list(ScriptDirectory(str(MIGRATIONS)).walk_revisions()))]


def downgrade(engine: sa.Engine, target: str, drop_data: bool = False) -> tuple[str, str, list[LostData]]:
    """Take the retention tables back to `target` (a revision, or `base`); returns (revision
    before, revision after, the data dropped). Raises DowngradeRefused for a target that is not an
    earlier migration, DowngradeWouldDropData while data would go and drop_data is False."""
    known = revisions()
    target = target.strip()
    if target != BASE and target not in known:
        raise DowngradeRefused(f"unknown revision {target!r}: the migrations are {BASE}, {', '.join(known)}")
    current = current_revision(engine)
    if current is None:
        raise DowngradeRefused("the retention tables have no migration applied: there is nothing to downgrade")
    if current not in known:
        raise DowngradeRefused(f"the retention tables are at migration {current}, which this code does not know: "
                               "downgrade with the release that wrote it")
    if target != BASE and known.index(target) > known.index(current):
        raise DowngradeRefused(f"revision {target} is after the current migration {current}: "
                               "use `retention db upgrade`")
    if target == current:
        return current, current, []
    with engine.begin() as connection:
        dropped = _dropped_on_a_copy(engine, target) if engine.dialect.name == "sqlite" else _trial(connection, target)
        kept = REBUILT | _carried_back(current, target)
        lost = [lost for table, column in dropped
                if table not in kept and (lost := _rows_with_data(connection, table, column)).rows]
        if lost and not drop_data:
            raise DowngradeWouldDropData(target, lost)
        command.downgrade(_config(connection), target)
    return current, target, lost


def _carried_back(current: str, target: str) -> frozenset[str]:
    """The tables whose rows the downgrades from `current` to `target` carry into others before
    dropping them (a migration's CARRIED_BACK): dropped, but no data lost."""
    directory = ScriptDirectory(str(MIGRATIONS))
    undone = directory.iterate_revisions(current, None if target == BASE else target)
    return frozenset(table for script in undone for table in getattr(script.module, "CARRIED_BACK", ()))


def _trial(connection: sa.Connection, target: str) -> list[tuple[str, str | None]]:
    """The tables and columns a downgrade to `target` drops, seen in a savepoint rolled back."""
    before = _shape(connection)
    trial = connection.begin_nested()
    command.downgrade(_config(connection), target)
    after = _shape(connection)
    trial.rollback()
    return _dropped(before, after)


def _dropped_on_a_copy(engine: sa.Engine, target: str) -> list[tuple[str, str | None]]:
    # SQLite's driver commits DDL as it goes: the trial runs on a copy of the file.
    source = Path(engine.url.database)
    with tempfile.TemporaryDirectory(prefix="retention-downgrade-") as folder:
        copy = Path(folder) / "trial.sqlite"
        shutil.copyfile(source, copy)
        trial_engine = sa.create_engine(f"sqlite:///{copy}")
        try:
            with trial_engine.connect() as connection:
                before = _shape(connection)
            with trial_engine.begin() as connection:
                command.downgrade(_config(connection), target)
            with trial_engine.connect() as connection:
                after = _shape(connection)
        finally:
            trial_engine.dispose()
    return _dropped(before, after)


def _shape(connection: sa.Connection) -> dict[str, set[str]]:
    inspector = sa.inspect(connection)
    return {table: {column["name"] for column in inspector.get_columns(table)}
            for table in inspector.get_table_names() if table != VERSION_TABLE}


def _dropped(before: dict[str, set[str]], after: dict[str, set[str]]) -> list[tuple[str, str | None]]:
    gone = [(table, None) for table in sorted(set(before) - set(after))]
    return gone + [(table, column) for table in sorted(set(before) & set(after))
                   for column in sorted(before[table] - after[table])]


def _rows_with_data(connection: sa.Connection, table: str, column: str | None) -> LostData:
    # Named, not reflected: only the count is needed, and SQLite's reflection warns of expression indexes.
    named = sa.table(table, *([sa.column(column)] if column else []))
    query = sa.select(sa.func.count()).select_from(named)
    if column is not None:
        query = query.where(named.c[column].is_not(None))
    return LostData(table, column, int(connection.execute(query).scalar_one()))
