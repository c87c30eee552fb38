"""Which requests for erasure the erasure sensor launches now, decided in one pure function over
what the sensor read in one tick: the rounds that want a run and the erasure runs the instance has.

A round is one request's erasure while it is open, or one check again of a partially blocked
request (told apart by when that check was due), so that the runs of one round do not stop the
next. A run, single-request or batch, erases a set of rounds; the database says whether each
round is still wanted (a request completed in a run is no longer open), so a finished run that
names a round still wanted failed it, and one that succeeded as a whole did it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Round:
    request_id: int
    recheck: str = ""  # "" while the request is open; else when its check again was due (ISO 8601)


@dataclass(frozen=True)
class ErasureRunFacts:
    """An erasure run as the sensor reads it: the rounds it erases, whether it has finished, and
    whether it succeeded as a whole."""

    rounds: frozenset[Round]
    finished: bool
    succeeded: bool


@dataclass(frozen=True)
class Launch:
    round: Round
    attempt: int  # 1 for the round's first run


def launches(wanted: Sequence[Round], runs: Iterable[ErasureRunFacts], batch_size: int,
             max_attempts: int) -> list[Launch]:
    """The rounds to launch now, in the order wanted (the nearest deadline first), at most
    `batch_size`: none of a request with a run in flight (of any round: two runs of one subject at
    once would race for its rows), none that a run did, none that failed `max_attempts` runs
    already (then the request's deadline breach calls a person)."""
    runs = list(runs)
    in_flight = {r.request_id for run in runs if not run.finished for r in run.rounds}
    done = {r for run in runs if run.finished and run.succeeded for r in run.rounds}
    failed = Counter(r for run in runs if run.finished and not run.succeeded for r in run.rounds)
    chosen: list[Launch] = []
    seen: set[int] = set()
    for round_ in wanted:
        if len(chosen) >= batch_size:
            break
        if (round_.request_id in in_flight or round_.request_id in seen or round_ in done
                or failed[round_] >= max_attempts):
            continue
        seen.add(round_.request_id)
        chosen.append(Launch(round_, failed[round_] + 1))
    return chosen
