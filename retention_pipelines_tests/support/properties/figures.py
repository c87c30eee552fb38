"""Each property's figures for the reliability table: the examples it ran, the invariants they broke."""

from __future__ import annotations

import os

from hypothesis import settings

from retention_pipelines_tests.support.figures import record
from retention_pipelines_tests.support.properties.model import InvariantViolated


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
