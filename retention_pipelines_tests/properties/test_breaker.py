"""Over any sequence of calls that succeed or fail and of waits past the reset timeout, a circuit
breaker lets through exactly what the pattern says: never more than N failing calls in a row
before it opens, nothing while it is open, one probe once the timeout has passed; and it says
once that it opened and once that it closed, each time it does."""

from __future__ import annotations

import logging
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from retention_pipelines.stores.breaker import CircuitOpen, ServiceBreaker

RESET_SECONDS = 60
steps = st.lists(st.sampled_from(["ok", "fail", "wait"]), max_size=40)


class Down(Exception):
    """The service's failure."""


class Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def expected(failures: int, sequence: list[str]) -> tuple[list[str], int, int]:
    """The pattern: what each step does (reached, refused or waited), how often it opens and closes."""
    state, in_a_row, timed_out, opened, closed, done = "closed", 0, False, 0, 0, []
    for step in sequence:
        if step == "wait":
            timed_out = state == "open"
            done.append("waited")
        elif state == "open" and not timed_out:
            done.append("refused")
        elif state == "open":  # the probe
            done.append("reached")
            if step == "ok":
                state, in_a_row, closed = "closed", 0, closed + 1
            else:
                timed_out = False
        else:
            done.append("reached")
            in_a_row = 0 if step == "ok" else in_a_row + 1
            if in_a_row >= failures:
                state, timed_out, opened = "open", False, opened + 1
    return done, opened, closed


@settings(max_examples=settings().max_examples * 20)
@given(failures=st.integers(1, 5), sequence=steps)
def test_the_breaker_lets_through_what_the_pattern_says(failures, sequence):
    breaker = ServiceBreaker("property service", failures, RESET_SECONDS)
    lines = Lines()
    logger = logging.getLogger("retention_pipelines.breaker")
    logger.addHandler(lines)
    try:
        done, failing_since_wait = [], 0
        for step in sequence:
            if step == "wait":
                if breaker.storage.opened_at is not None:  # the reset timeout passes
                    breaker.storage.opened_at = breaker.storage.opened_at - timedelta(seconds=RESET_SECONDS + 1)
                done.append("waited")
                failing_since_wait = 0
                continue
            reached = []

            def call(step=step, reached=reached):
                reached.append(step)
                if step == "fail":
                    raise Down()

            try:
                breaker.call(call)
            except (Down, CircuitOpen):
                pass
            done.append("reached" if reached else "refused")
            if reached:
                failing_since_wait = failing_since_wait + 1 if step == "fail" else 0
            # Without a wait, no more than N failing calls in a row ever reach the service.
            assert failing_since_wait <= failures, (done, failures)
    finally:
        logger.removeHandler(lines)
    want, opened, closed = expected(failures, sequence)
    assert done == want
    assert sum(" opened after " in m for m in lines.messages) == opened
    assert sum(" closed: " in m for m in lines.messages) == closed
