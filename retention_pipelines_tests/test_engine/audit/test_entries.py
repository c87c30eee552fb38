"""The audit log's vocabulary and its one writer (engine/audit/entries.py): every module that writes
an audit entry goes through it, every action it may name fits the log, and a queue item says which
erasure request it belongs to in a column, filled for the items already queued by migration 0011."""

from __future__ import annotations

import ast
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

import retention_pipelines
from retention_pipelines import schema
from retention_pipelines.engine.audit.entries import ACTED_ACTIONS, Action, AuditStamp, write_entries
from retention_pipelines.engine.oversight.queue import ManualQueue
from retention_pipelines.engine.report.figures import ACTION_GROUPS
from retention_pipelines.schema import audit_log
from retention_pipelines_tests.support.databases import database_at_revision

PACKAGE = Path(retention_pipelines.__file__).parent
WRITER = PACKAGE / "engine" / "audit" / "entries.py"


LOG_TABLES = {"audit_log", "audit_batches", "audit_records", "audit_held_once", "audit_chain_heads"}


def inserts_into_the_audit_log(path: Path) -> list[int]:
    """Lines of `sa.insert(T)` / `insert(T)` / `dialect.upsert(T)` / `sa.update(T)` / `T.insert()` in a module, for
    T the audit log's tables and its chains' heads."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            function = node.func
            name = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", "")
            target = function.value if isinstance(function, ast.Attribute) else None
            if name in ("insert", "upsert", "update") and any(
                    isinstance(arg, ast.Name) and arg.id in LOG_TABLES for arg in node.args):
                lines.append(node.lineno)
            elif name in ("insert", "update") and isinstance(target, ast.Name) and target.id in LOG_TABLES:
                lines.append(node.lineno)
    return lines


def test_only_the_one_writer_inserts_into_the_audit_log():
    writers = {str(path.relative_to(PACKAGE)): lines for path in PACKAGE.rglob("*.py")
               if "migrations" not in path.parts and (lines := inserts_into_the_audit_log(path))}
    assert writers == {str(WRITER.relative_to(PACKAGE)): writers.get(str(WRITER.relative_to(PACKAGE)))}
    assert writers[str(WRITER.relative_to(PACKAGE))], "the writer itself inserts"


def test_every_action_fits_the_log_and_each_group_names_only_actions():
    width = audit_log.c.action.type.length
    assert all(len(action.value) <= width for action in Action)
    known = {action.value for action in Action}
    assert {a for group in ACTION_GROUPS.values() for a in group} <= known
    assert {a for acted in ACTED_ACTIONS.values() for a in acted} <= known
    assert set(ACTED_ACTIONS) == {"deleted", "redacted", "erased"}  # a policy's two actions and an erasure


def test_an_entry_is_written_with_its_stamp_in_the_callers_transaction(any_database):
    database = any_database
    stamp = AuditStamp("quiz_responses", Action.HOLD_PLACED, "manual", "v1", detail="case 7", actor="ops")
    with pytest.raises(RuntimeError), database.begin() as connection:
        write_entries(connection, [stamp.row("r-1")])
        raise RuntimeError("the caller's transaction rolls back")
    with database.begin() as connection:
        assert write_entries(connection, [stamp.row("r-2"), stamp.row("r-3")]) == 2
        assert write_entries(connection, []) == 0
    with database.connect() as connection:
        rows = connection.execute(sa.select(audit_log.c.record_id, audit_log.c.action, audit_log.c.actor,
                                            audit_log.c.detail).order_by(audit_log.c.id)).all()
    assert [tuple(row) for row in rows] == [("r-2", "hold_placed", "ops", "case 7"),
                                            ("r-3", "hold_placed", "ops", "case 7")]


def test_an_erasures_queue_item_names_its_request_in_a_column(any_database):
    queue = ManualQueue(any_database)
    erasure = queue.add("quiz_responses", "rec-1", "delete_blocked", "erasure request 41: a foreign key",
                        timedelta(days=1), erasure_request_id=41).item
    scheduled = queue.add("quiz_responses", "rec-2", "delete_blocked", "a foreign key", timedelta(days=1)).item
    assert (erasure.erasure_request_id, scheduled.erasure_request_id) == (41, None)
    again = queue.add("quiz_responses", "rec-2", "delete_blocked", "still", timedelta(days=1), erasure_request_id=42)
    assert not again.newly_added and again.item.erasure_request_id == 42


@pytest.fixture(params=["postgresql", "sqlite"])
def database_at_0010(request, tmp_path):
    """A database with the retention tables at migration 0010, before the column existed."""
    database = database_at_revision(request, tmp_path, "0010")
    yield database
    database.dispose()


def test_migration_0011_names_the_request_of_the_items_already_queued(database_at_0010):
    engine = database_at_0010.engine
    queue = sa.table("retention_manual_queue", sa.column("domain"), sa.column("record_id"), sa.column("reason"),
                     sa.column("detail"), sa.column("due_at"))
    details = {"a": "erasure request 7: the record is under a legal hold and was kept",
               "b": "a foreign key blocks the delete", "c": "erasure request x: not a number",
               "d": "see erasure request 9: mentioned, not leading"}
    with engine.begin() as connection:
        connection.execute(sa.insert(queue), [
            {"domain": "quiz_responses", "record_id": record, "reason": "delete_blocked", "detail": detail,
             "due_at": database_at_0010.bind_time(database_at_0010.now())} for record, detail in details.items()])
    assert schema.upgrade(engine) == ("0010", schema.head_revision())
    with engine.connect() as connection:
        named = dict(connection.execute(sa.text(
            "SELECT record_id, erasure_request_id FROM retention_manual_queue")).all())
    assert named == {"a": 7, "b": None, "c": None, "d": None}
    with engine.begin() as connection:  # and back down, for a rollback of the release
        command.downgrade(schema._config(connection), "0010")
    assert "erasure_request_id" not in {c["name"] for c in sa.inspect(engine).get_columns("retention_manual_queue")}
