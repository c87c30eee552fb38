"""Walking many due rows keeps no ids in memory: the peak does not grow with the rows due."""

from __future__ import annotations

import gc
import tracemalloc

import pytest

from retention_pipelines.stores import AppDatabase
from retention_pipelines_tests.support.app_rows import bulk_insert_pg, remaining_ids
from retention_pipelines_tests.support.databases import new_database
from retention_pipelines_tests.support.engines import archiving, engine_for

BATCH = 1000


def peak_of_a_run(postgres_server, policy, policies, archive_url: str, due: int) -> int:
    database = AppDatabase(new_database(postgres_server))
    try:
        engine = engine_for(policy, policies, database, archive_url)
        bulk_insert_pg(database, 2 * BATCH + 10, "3 days")
        engine.run("warm-up")  # statements compiled and cached, pool connections opened
        bulk_insert_pg(database, due, "2 days")
        gc.collect()
        tracemalloc.start()
        try:
            report = engine.run("measured")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert report.acted.acted_on == due
        assert remaining_ids(database) == set()
        return peak
    finally:
        database.dispose()


@pytest.mark.parametrize("archive", [False, True], ids=["no-archive", "archive"])
def test_peak_memory_does_not_grow_with_the_rows_due(postgres_server, policies, quiz_policy, tmp_path, archive):
    policy = archiving(quiz_policy, batch_size=BATCH) if archive else quiz_policy.model_copy(
        update={"batch_size": BATCH})
    small = peak_of_a_run(postgres_server, policy, policies, (tmp_path / "small").as_uri(), 10_000)
    large = peak_of_a_run(postgres_server, policy, policies, (tmp_path / "large").as_uri(), 50_000)
    # Five times the rows: ids kept in memory would take about five times the peak.
    assert large < 1.5 * small + 512 * 1024, f"peak {small} B for 10,000 rows, {large} B for 50,000 rows"
