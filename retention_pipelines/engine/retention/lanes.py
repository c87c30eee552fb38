"""Work side by side: batches (drawn lazily, so memory stays flat however many there are), and the
objects of one batch."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, FIRST_EXCEPTION, ThreadPoolExecutor, as_completed, wait


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


def in_parallel(work: Callable, items: Sequence, workers: int, name: str) -> list:
    """[work(item) for item in items], `workers` at a time, results in the items' order. The
    first error cancels the items not yet started; once those running have finished, the error
    of the earliest failed item is raised (so nothing is left running behind the caller)."""
    if workers <= 1 or len(items) <= 1:
        return [work(item) for item in items]
    with ThreadPoolExecutor(min(workers, len(items)), thread_name_prefix=name) as pool:
        futures = [pool.submit(work, item) for item in items]
        _, not_done = wait(futures, return_when=FIRST_EXCEPTION)
        for future in not_done:
            future.cancel()
    # Leaving the `with` waited for the running ones; a cancelled item never ran.
    failed = [future.exception() for future in futures if not future.cancelled() and future.exception()]
    if failed:
        raise failed[0]
    return [future.result() for future in futures]


class ByteBudget:
    """The bytes that work side by side may hold in memory at once. Each piece of work takes what
    it will hold at most before it starts and gives it back when done; a piece that needs more
    than the whole budget takes all of it, alone."""

    def __init__(self, total: int):
        if total < 1:
            raise ValueError("a budget of bytes is at least one byte")
        self.total, self._taken = total, 0
        self._changed = threading.Condition()

    def take(self, wanted: int, wait: bool = True) -> int:
        """Take `wanted` bytes (at most the whole budget), waiting for them unless `wait` is False;
        returns the bytes taken (0 when not waiting and they are not free), to give back."""
        wanted = min(wanted, self.total)
        with self._changed:
            while self._taken + wanted > self.total:
                if not wait:
                    return 0
                self._changed.wait()
            self._taken += wanted
        return wanted

    def give_back(self, taken: int) -> None:
        if taken:
            with self._changed:
                self._taken -= taken
                self._changed.notify_all()

    @property
    def taken(self) -> int:
        return self._taken
