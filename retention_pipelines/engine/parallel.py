"""Batches side by side, with memory that stays flat however many there are."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, as_completed, wait


def bounded_parallel(work: Callable, items: Iterable, workers: int) -> Iterator:
    """work(item) for each item, `workers` at a time, results in completion order; the items are
    drawn lazily (at most one ahead of the workers), so memory stays flat. The first error stops
    the drawing and is raised once the batches in flight have finished."""
    if workers <= 1:
        yield from map(work, items)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="retention-batch") as pool:
        in_flight: set = set()
        for item in items:
            in_flight.add(pool.submit(work, item))
            if len(in_flight) > workers:  # one batch ready beside those running: no more in memory
                done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                yield from (future.result() for future in done)
        for future in as_completed(in_flight):
            yield future.result()
