"""The property suite's fixtures: one database per test (emptied between examples), the hold
command pointed at it, and each property's figures for the reliability table."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

from retention_pipelines_tests.conftest import new_database
from retention_pipelines_tests.property_harness import PropertyWorld
from retention_pipelines_tests.property_model import InvariantViolated
from retention_pipelines_tests.reliability.figures import record


@pytest.fixture
def world(postgres_server, tmp_path, monkeypatch):
    # The hold command reads its database from the environment; the world points it at the
    # database of each example's time zone, and monkeypatch puts the caller's value back.
    monkeypatch.setenv("RETENTION_DATABASE_URL", "unset")
    monkeypatch.setenv("RETENTION_LOG_LEVEL", "WARNING")
    world = PropertyWorld(new_database(postgres_server), tmp_path)
    yield world
    world.close()


class PropertyFigures:
    """Counts one property's examples and the invariants they broke, for the reliability table."""

    def __init__(self, case: str):
        self.case, self.examples = case, 0

    def __enter__(self) -> PropertyFigures:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        profile = os.environ.get("RETENTION_HYPOTHESIS_PROFILE", "ci")
        record(f"{self.case}: examples run", f"{settings().max_examples} ({profile} profile)",
               str(self.examples), met=True)
        broken = sorted({e.invariant for e in _leaves(error) if isinstance(e, InvariantViolated)})
        others = sorted({type(e).__name__ for e in _leaves(error) if not isinstance(e, InvariantViolated)})
        result = "0" if error is None else f"{len(broken) + len(others)}: " + "; ".join(broken + others)
        record(f"{self.case}: invariant violations", "0", result, met=error is None)


def _leaves(error: BaseException | None):
    if error is None:
        return
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from _leaves(inner)
    else:
        yield error
