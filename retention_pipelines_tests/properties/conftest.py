"""The property suite's fixtures: one database per test (emptied between examples), the hold
command pointed at it."""

from __future__ import annotations

import pytest

from retention_pipelines_tests.support.databases import new_database
from retention_pipelines_tests.support.properties.harness import PropertyWorld


@pytest.fixture
def world(postgres_server, tmp_path, monkeypatch):
    # The hold command reads its database from the environment; the world points it at the
    # database of each example's time zone, and monkeypatch puts the caller's value back.
    monkeypatch.setenv("RETENTION_DATABASE_URL", "unset")
    monkeypatch.setenv("RETENTION_LOG_LEVEL", "WARNING")
    world = PropertyWorld(new_database(postgres_server), tmp_path)
    yield world
    world.close()
