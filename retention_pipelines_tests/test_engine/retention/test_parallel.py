"""in_parallel: the objects of a batch side by side, results in order, an error stops the rest; the
budget of bytes they share."""

from __future__ import annotations

import threading
import time

import pytest

from retention_pipelines.engine.retention.lanes import ByteBudget, in_parallel


def test_results_come_in_the_items_order_whatever_order_they_finish_in():
    def slower_first(item: int) -> int:
        time.sleep((10 - item) / 500)
        return item * item

    assert in_parallel(slower_first, list(range(10)), 4, "test") == [item * item for item in range(10)]


def test_an_error_stops_the_items_not_started_and_is_raised_once_those_running_have_finished():
    started, finished = [], []
    lock = threading.Lock()

    def work(item: int) -> int:
        with lock:
            started.append(item)
        if item == 2:
            raise ValueError("item 2 failed")
        time.sleep(0.05)
        with lock:
            finished.append(item)
        return item

    with pytest.raises(ValueError, match="item 2"):
        in_parallel(work, list(range(100)), 4, "test")
    assert sorted(finished) == sorted(item for item in started if item != 2)  # nothing left running
    assert len(started) < 100  # the rest never started


def test_one_worker_is_a_plain_loop_in_the_callers_thread():
    assert in_parallel(lambda _: threading.current_thread(), [1, 2], 1, "test") == [threading.current_thread()] * 2


def test_a_budget_of_bytes_lets_work_through_while_it_lasts_and_what_needs_more_than_all_of_it_alone():
    budget = ByteBudget(100)
    assert budget.take(60) == 60 and budget.take(50, wait=False) == 0 and budget.take(40, wait=False) == 40
    assert budget.taken == 100
    taken: list[int] = []
    waiter = threading.Thread(target=lambda: taken.append(budget.take(500)))  # more than all of it
    waiter.start()
    time.sleep(0.05)
    assert taken == [] and waiter.is_alive()
    budget.give_back(60)
    time.sleep(0.05)
    assert taken == []  # all of it, so it waits for the rest too
    budget.give_back(40)
    waiter.join(5)
    assert taken == [100] and budget.taken == 100
    budget.give_back(100)
    assert budget.taken == 0
    with pytest.raises(ValueError):
        ByteBudget(0)
