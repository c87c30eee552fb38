"""The SQL of a retention run, for any policy: which rows are due, in keyset batches, and how they go.

Every query here is driven by the index on the policy's clock column: a run over 1% of a large
table reads that 1%, never the whole table.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from retention_pipelines.engine.audit.entries import AuditStamp, audited_from, link_batch, write_entries
from retention_pipelines.engine.oversight.holds import held, held_record_ids
from retention_pipelines.engine.retention.selection import ERASED_PLACEHOLDER_PATTERN, Selection
from retention_pipelines.policies import DomainPolicy
from retention_pipelines.schema import legal_holds, manual_queue
from retention_pipelines.stores import Dialect

# More than any zone's distance from UTC (the tz database's widest is under 16 hours): a wall-time
# clock due by a UTC instant is at most this far past that instant's UTC wall time.
WALL_CLOCK_SLACK = timedelta(days=1)
# What act_next's statement binds at each execution, by the shape of the lane's start.
_ACT_NEXT_PARAMETERS = (("batch_limit",), ("batch_limit", "after_clock"), ("batch_limit", "after_clock", "after_key"))


class DomainTable:
    """A policy bound to its reflected table: the columns a run reads and the statements it runs."""

    def __init__(self, policy: DomainPolicy, table: sa.Table, clock_zone: str | None = None):
        self.policy, self.table = policy, table
        self.pk = table.c[policy.primary_key]
        self.clock = table.c[policy.clock_column]
        # The zone the clock's values are wall times of (a `timestamp without time zone` column;
        # AppDatabase.clock_zone), None when they are instants.
        self.clock_zone = clock_zone
        self.archived_columns = [c for c in table.c if c.name not in policy.archive.exclude_columns]
        # _built's, a set per thread: SQLAlchemy memoizes on a statement as it is first compiled,
        # which two threads doing at once on one statement crashed the interpreter (its C extension).
        self._local = threading.local()

    @classmethod
    def of(cls, policy: DomainPolicy, database) -> DomainTable:
        """The domain's table in `database` (an AppDatabase), its clock read in the zone it is in."""
        return cls(policy, database.app_table(policy), database.clock_zone(policy))

    def record_id(self, value: object) -> str:
        """Record ids are stored as text in the audit log and the legal holds."""
        return str(value)

    def pk_value(self, record_id: str) -> object | None:
        """A record id back to a value the primary key compares with; None for one that cannot
        match any row (so that a malformed id in a hold or a manifest is no database error)."""
        if isinstance(self.pk.type, sa.Uuid):  # any spelling PostgreSQL accepts, in canonical text
            try:
                return str(uuid.UUID(record_id.strip()))
            except ValueError:
                return None
        try:
            python_type = self.pk.type.python_type
        except NotImplementedError:
            return record_id
        try:
            return python_type(record_id)
        except (TypeError, ValueError):
            return None

    def archive_select(self) -> tuple[list[sa.ColumnElement], set[str]]:
        """The archived columns, JSON and uuid columns read as the database's own text: JSON is
        embedded as-is in the archive line and a uuid is a string, so that no value is parsed and
        re-serialised row by row."""
        columns, raw_json = [], set()
        for column in self.archived_columns:
            if isinstance(column.type, (sa.JSON, sa.Uuid)):
                columns.append(sa.cast(column, sa.Text).label(column.name))
                if isinstance(column.type, sa.JSON):
                    raw_json.add(column.name)
            else:
                columns.append(column)
        return columns, raw_json

    def subject(self) -> sa.ColumnElement:
        """The subject's address of a row (the policy's subject column), or NULL where it has none."""
        if self.policy.subject_column:
            return self.table.c[self.policy.subject_column]
        return sa.null()

    def not_held(self) -> sa.ColumnElement[bool]:
        """No unreleased legal hold on the row (engine/oversight/holds.py): checked again inside each delete
        transaction, after its hold gate."""
        return ~held(self.policy.name, sa.cast(self.pk, sa.Text))

    def not_waiting_for_a_person(self) -> sa.ColumnElement[bool]:
        """No open or claimed manual-queue item about the row: what a run could not finish is in a
        person's hands, on the queue's own deadline, and not counted again as retention lag."""
        queued_id = manual_queue.c.record_id
        if isinstance(self.pk.type, sa.Uuid):
            queued_id = sa.func.lower(queued_id)
        return ~sa.exists().where(
            manual_queue.c.domain == self.policy.name,
            queued_id == sa.cast(self.pk, sa.Text),
            manual_queue.c.status.in_(("open", "claimed")),
        )

    def clock_utc(self, clock: sa.ColumnElement | None = None) -> sa.ColumnElement:
        """The clock (or a value of it handed back by RETURNING) as a UTC instant: a wall-time
        column read in the policy's declared zone, never in the session's TimeZone. Every
        comparison with the clock and every deadline goes through here."""
        clock = self.clock if clock is None else clock
        if self.clock_zone is None:
            return clock
        return sa.func.timezone(self.clock_zone, clock, type_=sa.DateTime(timezone=True))

    def clock_instant(self, value: datetime) -> datetime:
        """A clock value outside the database (a restored row's) as the UTC instant clock_utc()
        makes of it."""
        if value.tzinfo is not None:
            return value.astimezone(UTC)
        if self.clock_zone is None:  # SQLite's clock: UTC text
            return value.replace(tzinfo=UTC)
        zone = ZoneInfo(self.clock_zone)
        earlier, later = value.replace(tzinfo=zone, fold=0), value.replace(tzinfo=zone, fold=1)
        # As PostgreSQL reads a wall time: one that occurs twice (DST ends) as the later instant,
        # one that never occurs (DST begins) with the offset before the gap.
        occurs = earlier.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == value
        return (later if occurs else earlier).astimezone(UTC)

    def clock_at_or_before(self, moment: datetime) -> list[sa.ColumnElement[bool]]:
        """The clock at or before a UTC instant (bound as the database compares it), decided on
        clock_utc(); for a wall-time clock also a bound on the column itself, WALL_CLOCK_SLACK
        past, so that the clock index still narrows the scan to the due rows."""
        conditions = [self.clock_utc() <= moment]
        if self.clock_zone is not None:
            conditions.append(self.clock <= moment.astimezone(UTC).replace(tzinfo=None) + WALL_CLOCK_SLACK)
        return conditions

    def count_without_clock(self, connection: sa.Connection) -> int:
        """Rows whose clock is NULL: never due (the policy's clock_nulls: keep), so counted where
        people look (the domain's check, `retention health`) rather than kept unseen."""
        if not self.clock.nullable:
            return 0
        return int(connection.execute(sa.select(sa.func.count()).select_from(self.table)
                                      .where(self.clock.is_(None))).scalar_one())

    def due(self, clock_cutoff: datetime | None, selection: Selection) -> list[sa.ColumnElement[bool]]:
        """The selected rows still to be acted on: those whose deadline has passed by the cutoff;
        for an erasure, the subject's rows, whatever their deadline (an erased row no longer names
        them); for a retry, only the records it names."""
        erasing = selection.subject
        if erasing is not None:
            if not self.policy.subject_column:
                raise ValueError(f"domain {self.policy.name} has no subject column: nothing in it can be erased "
                                 "by subject")
            subject = self.table.c[self.policy.subject_column]
            # The subject's rows by the exact addresses they were found with (engine/identity/subjects.py:
            # who a subject is is decided in Python, once; the database only compares the stored
            # text for equality, through the address index). A record kept by a hold is erased by
            # its id once the hold is released (the request's address may be gone by then): then
            # the selection names it.
            conditions = [] if erasing.spellings is None else [subject.in_(erasing.spellings)]
            if erasing.spellings is None and selection.record_ids is None:
                raise ValueError("an erasure without its subject's addresses must name its records")
            if erasing.spellings is None and self.policy.redact:  # an erased row stays, its address gone
                conditions += [subject.is_not(None), ~subject.like(ERASED_PLACEHOLDER_PATTERN)]
            if self.policy.on_erasure == "keep_until_deadline":
                # Its rows go no earlier than their deadline, even on erasure.
                conditions += self.clock_at_or_before(clock_cutoff)
        else:
            conditions = self.clock_at_or_before(clock_cutoff)
            if self.policy.redact:  # a redacted row stays; it is done once its stamp is set
                conditions.append(self.table.c[self.policy.redact.stamp_column].is_(None))
        if selection.record_ids is not None:
            # Ids that cannot match a row (malformed) match nothing.
            conditions.append(self.pk.in_([pk for rid in selection.record_ids
                                           if (pk := self.pk_value(rid)) is not None]))
        return conditions

    def deadline(self, clock_utc: sa.ColumnElement, selection: Selection) -> sa.ColumnElement:
        """The audit row's deadline: the record's clock as UTC (clock_utc()) + its retention
        period, exactly; for an erasure, the request's due date."""
        if selection.subject is not None:
            return sa.literal(selection.subject.due_at, sa.DateTime(timezone=True))
        return clock_utc + exact_interval(self.policy.retain_for)

    def deadline_value(self, clock_utc: datetime, selection: Selection) -> datetime:
        """deadline() of a clock_utc() value read back (SQLite: naive UTC)."""
        if selection.subject is not None:
            return selection.subject.due_at
        return _aware(clock_utc) + self.policy.retain_for

    def returning(self) -> tuple[sa.ColumnElement, sa.ColumnElement]:
        """What a DELETE/UPDATE hands back of each row it acted on: (pk, clock_utc())."""
        return self.pk, self.clock_utc().label("clock_utc")

    def count_due(self, clock_cutoff: datetime, selection: Selection, window_start_clock: datetime | None,
                  *extra: sa.ColumnElement[bool], held: bool = False) -> sa.Select:
        """(due in the window, all due) among the rows not under a legal hold; with held=True,
        held rows counted in: a count the clock index alone answers (an index-only scan), where
        the hold check must read every row for its key (0.5 s for 500,000 rows)."""
        in_window = (
            sa.case((self.clock_utc() > window_start_clock, 1), else_=0) if window_start_clock is not None
            else sa.literal(1)
        )
        return sa.select(
            sa.func.coalesce(sa.func.sum(in_window), 0), sa.func.count()
        ).where(*self.due(clock_cutoff, selection), *([] if held else [self.not_held()]), *extra)

    def batches(
        self, engine: sa.Engine, columns: Sequence[sa.Column], clock_cutoff: datetime, selection: Selection,
        batch_size: int
    ) -> Iterator[list[DueRow]]:
        """Keyset walk over (clock, pk): constant memory and one index range per batch, however
        many rows are due; rows deleted behind the walk are never scanned again. Each batch is
        read in its own short transaction, so a long walk holds no snapshot open. A uuid key is
        read as text (what record ids are): parsing a million uuid objects took 3 s."""
        pk = sa.cast(self.pk, sa.Text) if isinstance(self.pk.type, sa.Uuid) else self.pk
        selected = [self.clock, pk, self.subject(), *columns]
        last: tuple | None = None
        while True:
            query = self._keyset(sa.select(*selected).where(*self.due(clock_cutoff, selection), self.not_held()),
                                 last)
            with engine.connect() as connection:
                rows = [DueRow(row[0], row[1], row[2], tuple(row[3:]))
                        for row in connection.execute(query.order_by(self.clock, self.pk).limit(batch_size))]
            if not rows:
                return
            yield rows
            last = (rows[-1].clock, rows[-1].pk)

    def _keyset(self, query: sa.Select, after: tuple | None, upto: tuple | None = None) -> sa.Select:
        """Rows strictly after `after` and up to `upto` (inclusive) in (clock, pk) order; a bound
        whose key is None is the clock's alone (a lane's edge: every row of that instant is on one
        side). Spelled out rather than as row-value comparisons so that every planner uses the
        clock index."""
        if after is not None:
            query = query.where(self.clock > after[0]) if after[1] is None else query.where(
                self.clock >= after[0], sa.or_(self.clock > after[0], self.pk > after[1]))
        if upto is not None:
            query = query.where(self.clock <= upto[0]) if upto[1] is None else query.where(
                self.clock <= upto[0], sa.or_(self.clock < upto[0], self.pk <= upto[1]))
        return query

    def lanes(self, engine: sa.Engine, clock_cutoff: datetime, selection: Selection, due_rows: int, count: int,
              batch_size: int) -> list[KeyRange]:
        """The due rows cut into `count` lanes of about as many rows each, at clock instants read
        from the clock index alone (an index-only scan): lanes are walked side by side, each batch
        choosing its own next rows (act_next), so that no row is read twice to plan the batches."""
        if count <= 1 or due_rows < 2 * batch_size:
            return [KeyRange(None, None)]
        edges = []
        with engine.connect() as connection:
            for k in range(1, count):
                edge = connection.execute(sa.select(self.clock).where(*self.due(clock_cutoff, selection))
                                          .order_by(self.clock).offset(k * due_rows // count).limit(1)).scalar()
                if edge is not None and (not edges or edge > edges[-1]):
                    edges.append(edge)
        bounds = [None, *((edge, None) for edge in edges), None]
        return [KeyRange(after, upto) for after, upto in zip(bounds, bounds[1:])]

    def act_next(self, connection: sa.Connection, clock_cutoff: datetime, selection: Selection, stamp: AuditStamp,
                 lane: KeyRange, limit: int) -> tuple[int, tuple | None]:
        """Choose the next `limit` due rows of a lane, after lane.after, and DELETE (or redact) and
        audit those not held in the caller's transaction: (rows acted on, the (clock, key) of the
        last row chosen, None when none was left). Deadline and holds are checked by the statement
        that acts, and only the rows it RETURNs are audited."""
        if not Dialect.of(connection).acts_in_one_statement:
            keys = connection.execute(self.next_rows(clock_cutoff, selection, lane, limit)).all()
            if not keys:
                return 0, None
            return self.act_batch(connection, clock_cutoff, selection, stamp, [pk for _, pk in keys]), tuple(keys[-1])
        after = lane.after
        shape = 0 if after is None else 1 if after[1] is None else 2
        statement = self._built(("act_next", clock_cutoff, selection, lane.upto, shape),
                                lambda: self._act_next_statement(connection, clock_cutoff, selection, lane.upto, shape))
        values = {"batch_limit": limit, "after_clock": None if after is None else after[0],
                  "after_key": None if after is None else after[1]}
        row = connection.execute(statement, {name: values[name] for name in _ACT_NEXT_PARAMETERS[shape]}).one()
        acted = link_batch(connection, stamp, row.batch_id, row.records, row.digest)
        return acted, None if row.last_clock is None else (row.last_clock, row.last_key)

    def _act_next_statement(self, connection: sa.Connection, clock_cutoff: datetime, selection: Selection,
                            upto: tuple | None, shape: int) -> sa.Select:
        """act_next's statement for a lane's end and the shape of its start (none, a clock, a clock
        and key): the start and the batch's size are bound at each execution."""
        after = (None if shape == 0 else (sa.bindparam("after_clock", type_=self.clock.type),
                                          None if shape == 1 else sa.bindparam("after_key", type_=self.pk.type)))
        # Held rows are chosen too, and passed over by the act's own check of holds: checked once per
        # row, where a check here as well cost the statement a tenth of its time (benchmarks/); a
        # lane walks past them as past any other row.
        chosen = self._keyset(sa.select(self.clock, self.pk).where(*self.due(clock_cutoff, selection)), after, upto)
        chosen = chosen.order_by(self.clock, self.pk).limit(sa.bindparam("batch_limit", type_=sa.Integer))
        # Choose, delete and audit in one statement (data-modifying CTEs), rows deleted
        # by their physical address (ctid), so that no id travels to the worker and back.
        ctid = sa.literal_column("ctid")
        picked = chosen.add_columns(ctid.label("row_ctid")).cte("chosen")
        gone = self._act(ctid == sa.any_(sa.func.array(sa.select(picked.c.row_ctid).scalar_subquery())),
                         clock_cutoff, selection).returning(*self.returning()).cte("gone")
        last = sa.select(picked).order_by(picked.c[self.clock.name].desc(), picked.c[self.pk.name].desc()).limit(1)
        last = last.subquery("last")
        audited = self._audited(connection, gone, selection).subquery("audited")
        # The last row chosen read once, beside the audit (none chosen: NULLs).
        return sa.select(audited, last.c[self.clock.name].label("last_clock"),
                         last.c[self.pk.name].label("last_key")).select_from(audited.outerjoin(last, sa.true()))

    def _built(self, key: tuple, build: Callable[[], sa.Executable]) -> sa.Executable:
        """A statement built once per run and shape, its values bound at each execution. Built per
        batch, a statement is a tree of hundreds of objects in reference cycles (SQLAlchemy's
        selectables and their columns), freed only by the cycle collector: one still alive while
        its batch waits for PostgreSQL is promoted to the oldest generation, where the trees of a
        hundred batches wait for a full collection, and a run's peak memory grows with its batches."""
        statements = getattr(self._local, "statements", None)
        if statements is None:
            statements = self._local.statements = {}
        try:
            statement = statements.get(key)
        except TypeError:  # a selection that cannot be a key (unhashable values): built each time
            return build()
        if statement is None:
            statement = build()
            # Those of other runs (another cutoff or selection) go: a run's own are a few.
            for other in [other for other in statements if other[1:3] != key[1:3]]:
                del statements[other]
            statements[key] = statement
        return statement

    def act_batch(self, connection: sa.Connection, clock_cutoff: datetime, selection: Selection, stamp: AuditStamp,
                  pks: Sequence[object]) -> int:
        """DELETE (or redact) these rows (those of a verified archive object, or chosen by
        act_next) and write one audit row per row acted on, in the caller's transaction; returns
        how many. Deadline and holds are checked again in the statement itself, and only the rows
        it RETURNs are audited."""
        if not pks:
            return 0
        if Dialect.of(connection).acts_in_one_statement:
            # One statement (data-modifying CTEs) and one array parameter: `IN` with 10,000 bound
            # values is compiled, sent and parsed as 10,000 parameters.
            statement = self._built(("act_batch", clock_cutoff, selection),
                                    lambda: self._act_batch_statement(connection, clock_cutoff, selection))
            row = connection.execute(statement, {"keys": [str(pk) for pk in pks]}).one()
            return link_batch(connection, stamp, row.batch_id, row.records, row.digest)
        done = connection.execute(self._act(self.pk.in_(pks), clock_cutoff, selection)
                                  .returning(*self.returning())).all()
        write_entries(connection, [stamp.row(self.record_id(pk), self.deadline_value(clock, selection))
                                   for pk, clock in done])
        return len(done)

    def _act_batch_statement(self, connection: sa.Connection, clock_cutoff: datetime,
                             selection: Selection) -> sa.Select:
        keys = sa.bindparam("keys", type_=sa.ARRAY(sa.Text))
        target = self.pk == sa.any_(sa.cast(keys, sa.ARRAY(self.pk.type)))
        gone = self._act(target, clock_cutoff, selection).returning(*self.returning()).cte("gone")
        return self._audited(connection, gone, selection)

    def next_rows(self, clock_cutoff: datetime, selection: Selection, lane: KeyRange, limit: int) -> sa.Select:
        """(clock, key) of the next `limit` due rows (not held) of a lane, in (clock, key) order."""
        return self._keyset(sa.select(self.clock, self.pk).where(*self.due(clock_cutoff, selection), self.not_held()),
                            lane.after, lane.upto).order_by(self.clock, self.pk).limit(limit)

    def _audited(self, connection: sa.Connection, gone: sa.CTE, selection: Selection) -> sa.Select:
        """The audit of every row a DELETE/UPDATE … RETURNING (`gone`) handed back: its record rows
        written, and one row (batch_id, records, digest) for link_batch."""
        return audited_from(connection, sa.cast(gone.c[self.pk.name], sa.Text),
                            self.deadline(gone.c.clock_utc, selection))

    def redact_rows(self, pks: Sequence[object], clock_cutoff: datetime, selection: Selection) -> sa.Update:
        """Redact exactly these rows (still due, not held), RETURNING (pk, clock_utc) of each."""
        return self._act(self.pk.in_(pks), clock_cutoff, selection).returning(*self.returning())

    def _act(self, target: sa.ColumnElement[bool], clock_cutoff: datetime,
             selection: Selection) -> sa.Delete | sa.Update:
        where = [target, *self.due(clock_cutoff, selection), self.not_held()]
        erasing = selection.subject
        if self.policy.redact:
            values = {column: None for column in self.policy.redact.null_columns}
            stamp = self.table.c[self.policy.redact.stamp_column]
            values[stamp.name] = sa.func.now() if erasing is None else sa.func.coalesce(stamp, sa.func.now())
            if erasing is not None:
                # The row stays (a purchase record, kept for the law); the subject's address goes.
                subject = self.table.c[self.policy.subject_column]
                values[subject.name] = None if subject.nullable else erasing.placeholder
            return sa.update(self.table).where(*where).values(values)
        return sa.delete(self.table).where(*where)

    def respell_holds(self, connection: sa.Connection) -> list[tuple[int, str, str]]:
        """Unreleased holds that name a row of the table in a spelling other than its canonical
        text (written behind `hold add`'s back, which stores only that): rewritten in it, so that the
        one test of a hold (engine/oversight/holds.py) sees them as the counts already do. (hold id, from, to)."""
        holds = connection.execute(sa.select(legal_holds.c.id, legal_holds.c.record_id).where(
            legal_holds.c.domain == self.policy.name, legal_holds.c.released_at.is_(None))).all()
        by_key: dict[object, list[tuple[int, str]]] = {}
        for hold_id, record_id in holds:
            if (pk := self.pk_value(record_id)) is not None:
                by_key.setdefault(pk, []).append((hold_id, record_id))
        respelled = []
        keys = sorted(by_key, key=str)
        for start in range(0, len(keys), 1000):
            for (text,) in connection.execute(sa.select(sa.cast(self.pk, sa.Text)).where(
                    self.pk.in_(keys[start:start + 1000]))):
                for hold_id, record_id in by_key.get(self.pk_value(text), []):
                    if record_id != text:
                        connection.execute(sa.update(legal_holds).where(legal_holds.c.id == hold_id)
                                           .values(record_id=text))
                        respelled.append((hold_id, record_id, text))
        return respelled

    def held_keys(self, connection: sa.Connection) -> list:
        """The key values that unreleased holds of the domain name, in any spelling the key accepts."""
        return sorted({pk for rid in held_record_ids(connection, self.policy.name)
                       if (pk := self.pk_value(rid)) is not None}, key=str)

    def held_due(self, connection: sa.Connection, clock_cutoff: datetime, selection: Selection) -> list[str]:
        """Record ids under an unreleased hold whose rows are selected and due."""
        return list(self.held_due_clocks(connection, clock_cutoff, selection))

    def held_due_clocks(self, connection: sa.Connection, clock_cutoff: datetime,
                        selection: Selection) -> dict[str, datetime]:
        """{record id: clock as UTC} of the rows under an unreleased hold that are due: holds are few,
        rows are many, so the holds are read and each one's row looked up by primary key."""
        pks = self.held_keys(connection)
        due = {}
        for start in range(0, len(pks), 1000):
            rows = connection.execute(sa.select(self.pk, self.clock_utc()).where(self.pk.in_(pks[start:start + 1000]),
                                                                           *self.due(clock_cutoff, selection)))
            due.update((self.record_id(pk), clock) for pk, clock in rows)
        return due


def exact_interval(duration: timedelta) -> sa.ColumnElement:
    """A duration as the database adds it exactly: a number of seconds. A bound timedelta arrives
    as days, and timestamptz + '1 day' is 23 or 25 hours across a DST change in the session's zone."""
    return sa.literal(duration.total_seconds(), sa.Float) * sa.literal_column("interval '1 second'", sa.Interval)


def _aware(moment: datetime) -> datetime:
    """SQLite hands back naive UTC; PostgreSQL aware instants."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


@dataclass(frozen=True)
class DueRow:
    """A due row as the archive walk reads it: its clock, its key (as the walk compares it), its
    subject (None where the domain has none) and the values of the archived columns, in their order."""

    clock: object
    pk: object
    subject: str | None
    values: tuple


@dataclass(frozen=True)
class KeyRange:
    """Due rows after `after` up to `upto` in (clock, pk) order; None is open-ended."""

    after: tuple | None
    upto: tuple | None
