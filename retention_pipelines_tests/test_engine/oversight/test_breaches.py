"""The breach book: one open breach per domain and kind, whose escalation level only rises,
reported as escalated exactly once per new level; on PostgreSQL and on SQLite."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from retention_pipelines.engine.oversight.sla import RETENTION_LAG, RUN_FAILURES, Breaches
from retention_pipelines.stores import AppDatabase

LIMIT = timedelta(hours=1)


def lag(hours: float) -> timedelta:
    return timedelta(hours=hours)


def test_the_level_only_rises_and_each_new_level_escalates_once(any_database):
    book = Breaches(any_database)
    opened = book.open("quiz_responses", RETENTION_LAG, lag(1.5), LIMIT, 1)
    assert opened.newly_opened and opened.level == 1 and not opened.escalated

    steps = [(1.6, 1, 1, False), (2.5, 2, 2, True), (2.6, 2, 2, False), (1.2, 1, 2, False),
             (4.5, 3, 3, True), (3.0, 2, 3, False), (5.0, 3, 3, False)]
    for hours, asked, level, escalated in steps:
        breach = book.open("quiz_responses", RETENTION_LAG, lag(hours), LIMIT, asked)
        assert (breach.id, breach.newly_opened) == (opened.id, False)
        assert (breach.level, breach.escalated) == (level, escalated), (hours, asked)
        [row] = book.all("quiz_responses")
        assert row["escalation_level"] == level and row["observed"] == lag(hours).total_seconds()
        assert row["closed_at"] is None


def test_a_breach_can_open_above_level_one_and_skip_levels(any_database):
    book = Breaches(any_database)
    opened = book.open("meal_plans", RUN_FAILURES, 4, 2, 2)
    assert opened.newly_opened and opened.level == 2 and not opened.escalated
    jumped = book.open("meal_plans", RUN_FAILURES, 9, 2, 4)
    assert jumped.level == 4 and jumped.escalated
    assert book.all("meal_plans")[0]["escalation_level"] == 4


def test_a_new_breach_after_a_close_starts_from_its_own_level(any_database):
    book = Breaches(any_database)
    first = book.open("quiz_responses", RETENTION_LAG, lag(5), LIMIT, 3)
    assert book.close("quiz_responses", RETENTION_LAG) is not None
    second = book.open("quiz_responses", RETENTION_LAG, lag(1.5), LIMIT, 1)
    assert second.newly_opened and second.id != first.id and second.level == 1
    again = book.open("quiz_responses", RETENTION_LAG, lag(2.5), LIMIT, 2)
    assert again.escalated and again.level == 2
    closed, still_open = book.all("quiz_responses")
    assert closed["escalation_level"] == 3 and closed["closed_at"] is not None
    assert still_open["escalation_level"] == 2 and still_open["closed_at"] is None


def test_levels_are_kept_per_domain_and_kind(any_database):
    book = Breaches(any_database)
    book.open("quiz_responses", RETENTION_LAG, lag(1.5), LIMIT, 1)
    book.open("quiz_responses", RUN_FAILURES, 3, 3, 1)
    book.open("meal_plans", RETENTION_LAG, lag(100), timedelta(days=2), 1)
    assert book.open("quiz_responses", RETENTION_LAG, lag(2.5), LIMIT, 2).escalated
    assert not book.open("quiz_responses", RUN_FAILURES, 3, 3, 1).escalated
    levels = {(row["domain"], row["kind"]): row["escalation_level"] for row in book.all()}
    assert levels == {("quiz_responses", RETENTION_LAG): 2, ("quiz_responses", RUN_FAILURES): 1,
                      ("meal_plans", RETENTION_LAG): 1}


def test_two_sensors_observing_at_once_escalate_a_breach_once(pg_url, pg_database):
    """Row-locked: of eight observers calling for level 2 at the same moment, one escalates."""
    Breaches(pg_database).open("quiz_responses", RETENTION_LAG, lag(1.5), LIMIT, 1)
    databases = [AppDatabase(pg_url) for _ in range(8)]
    start, results, errors = threading.Barrier(len(databases)), [], []

    def observe(database: AppDatabase) -> None:
        try:
            start.wait(10)
            results.append(Breaches(database).open("quiz_responses", RETENTION_LAG, lag(2.5), LIMIT, 2))
        except Exception as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=observe, args=(database,)) for database in databases]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    finally:
        for database in databases:
            database.dispose()
    assert errors == []
    assert len(results) == len(databases)
    assert sum(breach.escalated for breach in results) == 1
    assert {breach.level for breach in results} == {2}
    [row] = Breaches(pg_database).all()
    assert row["escalation_level"] == 2


@pytest.fixture(params=["postgresql", "sqlite"])
def empty_database(request, tmp_path):
    """A database without the retention tables: the migrations are applied by the test."""
    if request.param == "postgresql":
        import uuid

        url = request.getfixturevalue("postgres_server").create_database(f"migrate_{uuid.uuid4().hex[:8]}")
    else:
        url = f"sqlite:///{tmp_path / 'migrate.db'}"
    database = AppDatabase(url)
    yield database
    database.dispose()


def test_migration_0003_gives_breaches_already_recorded_level_one(empty_database):
    import sqlalchemy as sa
    from alembic import command

    from retention_pipelines import schema

    engine = empty_database.engine
    with engine.begin() as connection:
        command.upgrade(schema._config(connection), "0002")
    assert schema.current_revision(engine) == "0002"
    with engine.begin() as connection:
        connection.execute(sa.text(
            "INSERT INTO retention_sla_breaches (domain, kind, observed, threshold, opened_at) "
            "VALUES ('quiz_responses', 'retention_lag', 5400, 3600, CURRENT_TIMESTAMP), "
            "       ('meal_plans', 'run_failures', 2, 2, CURRENT_TIMESTAMP)"))
    before, after = schema.upgrade(engine)
    assert (before, after) == ("0002", schema.head_revision())
    book = Breaches(empty_database)
    assert {row["domain"]: row["escalation_level"] for row in book.all()} == {"quiz_responses": 1, "meal_plans": 1}
    breach = book.open("quiz_responses", RETENTION_LAG, lag(2.5), LIMIT, 2)
    assert not breach.newly_opened and breach.escalated and breach.level == 2
    assert not book.open("meal_plans", RUN_FAILURES, 2, 2, 1).escalated

    with engine.begin() as connection:  # and back down, for a rollback of the release
        command.downgrade(schema._config(connection), "0002")
    columns = {c["name"] for c in sa.inspect(engine).get_columns("retention_sla_breaches")}
    assert "escalation_level" not in columns and {"domain", "kind", "observed"} <= columns
