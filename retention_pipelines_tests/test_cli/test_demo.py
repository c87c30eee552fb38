"""`retention demo`: builds the SQLite demo database and brings quiz_responses into compliance."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
import sqlalchemy as sa

from retention_pipelines.policies import load_policies
from retention_pipelines_tests.support.cli import EMAIL, dagster_home

QUIZ_RETENTION = timedelta(hours=24)


def quiz_created_at(database_file) -> list[datetime]:
    engine = sa.create_engine(f"sqlite:///{database_file}")
    try:
        with engine.connect() as connection:
            values = connection.exec_driver_sql("SELECT created_at FROM quiz_responses").scalars().all()
            audit = connection.exec_driver_sql(
                "SELECT count(*) FROM retention_audit_log WHERE domain = 'quiz_responses' AND action = 'deleted'"
            ).scalar_one()
    finally:
        engine.dispose()
    moments = [v if isinstance(v, datetime) else datetime.fromisoformat(v) for v in values]
    return [m.replace(tzinfo=UTC) if m.tzinfo is None else m.astimezone(UTC) for m in moments], audit


def test_demo_builds_the_database_and_deletes_quiz_answers_older_than_24h(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home(tmp_path)))
    rows = 300

    started = datetime.now(UTC)
    outcome = cli("demo", "--rows", str(rows))
    finished = datetime.now(UTC)
    assert outcome.code == 0, outcome.text
    assert not EMAIL.search(outcome.text), outcome.text

    database_file = tmp_path / ".retention" / "demo.db"
    assert database_file.is_file()
    assert str(database_file) in outcome.out
    assert "quiz_responses" in outcome.out

    created, audited = quiz_created_at(database_file)
    # Everything due before the run started is gone; everything not due when it ended stays.
    assert not [c for c in created if c < started - QUIZ_RETENTION]
    assert [c for c in created if c > finished - QUIZ_RETENTION]
    # The seed spreads answers over 3 days: about two thirds were due, every one deleted and audited.
    assert rows - len(created) == audited
    assert rows // 3 < audited < rows

    enabled = [name for name, policy in load_policies().domains.items() if policy.enabled]
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs()
    assert sorted(run.job_name for run in runs) == sorted(f"{name}_retention_job" for name in enabled)
    assert all(run.status == dg.DagsterRunStatus.SUCCESS for run in runs)


def test_demo_with_explicit_home_and_rerun_starts_afresh(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home(tmp_path / "dagster")))
    monkeypatch.setenv("RETENTION_HOME", str(tmp_path / "home"))

    assert cli("demo", "--rows", "60").code == 0
    first, _ = quiz_created_at(tmp_path / "home" / "demo.db")
    assert cli("demo", "--rows", "60").code == 0
    second, audited = quiz_created_at(tmp_path / "home" / "demo.db")
    # A fresh database each time: the second run starts from the same seed, not from the first's leftovers.
    assert abs(len(second) - len(first)) <= 1  # the same seed; a row may cross 24h in between
    assert audited == 60 - len(second)
    assert not (tmp_path / ".retention").exists()
    # The Dagster history is the second demo's alone: what the UI shows is what the audit log says.
    enabled = [name for name, policy in load_policies().domains.items() if policy.enabled]
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs()
        deletions = instance.fetch_materializations(dg.AssetKey(["quiz_responses", "deletion"]), limit=10).records
    assert len(runs) == len(enabled)
    [deletion] = deletions
    assert deletion.run_id in {run.run_id for run in runs}
    assert deletion.asset_materialization.metadata["rows_deleted"].value == audited


def test_demo_refuses_to_replace_the_history_of_an_instance_it_does_not_own(cli, tmp_path, monkeypatch,
                                                                            postgres_server):
    """A DAGSTER_HOME whose runs are in PostgreSQL (production's kind) is never wiped: refused first."""
    monkeypatch.chdir(tmp_path)
    storage = postgres_server.create_database("dagster_not_the_demo")
    home = tmp_path / "dagster"
    home.mkdir()
    (home / "dagster.yaml").write_text(f"storage:\n  postgres:\n    postgres_url: {storage}\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("RETENTION_HOME", str(tmp_path / "home"))
    @dg.asset
    def not_the_demos() -> None:
        """A run of another project on that instance."""

    with dg.DagsterInstance.get() as instance:
        kept = dg.materialize([not_the_demos], instance=instance).run_id
    refused = cli("demo", "--rows", "10")
    assert refused.code == 2 and "DAGSTER_HOME must be a demo instance" in refused.err
    assert not (tmp_path / "home" / "demo.db").exists()  # refused before anything was made
    with dg.DagsterInstance.get() as instance:
        assert [run.run_id for run in instance.get_runs()] == [kept]


def test_demo_refuses_a_configured_database(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RETENTION_DATABASE_URL", f"sqlite:///{tmp_path / 'production.db'}")
    outcome = cli("demo")
    assert outcome.code == 2
    assert "RETENTION_DATABASE_URL" in outcome.err
    assert not (tmp_path / "production.db").exists()
    assert not (tmp_path / ".retention" / "demo.db").exists()
