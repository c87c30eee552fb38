"""The erasure sensor's decision, over many ticks: never a request launched while one of its runs is
in flight, never more than MAX_ATTEMPTS failed runs of a round, never a round launched again once a
run did it, never more than the batch size, and every round that may go goes, nearest deadline first."""

from hypothesis import given, settings
from hypothesis import strategies as st

from retention_pipelines.dagster_wiring.erasure_rounds import ErasureRunFacts, Round, launches

MAX = 3
# A pure function, milliseconds an example: many more examples than the suite's profile gives a test on servers.
MANY = settings(max_examples=400)
rounds = st.builds(Round, request_id=st.integers(1, 8), recheck=st.sampled_from(["", "2026-12-01T00:00:00+00:00"]))
runs = st.lists(st.builds(ErasureRunFacts, rounds=st.frozensets(rounds, min_size=1, max_size=4),
                          finished=st.booleans(), succeeded=st.booleans()), max_size=12)


@MANY
@given(wanted=st.lists(rounds, max_size=12), runs=runs, batch_size=st.integers(1, 6))
def test_one_tick_launches_exactly_the_rounds_that_may_go_up_to_the_batch_size(wanted, runs, batch_size):
    chosen = launches(wanted, runs, batch_size, MAX)

    def failures(round_):
        return sum(1 for run in runs if run.finished and not run.succeeded and round_ in run.rounds)

    busy = {r.request_id for run in runs if not run.finished for r in run.rounds}
    done = {r for run in runs if run.finished and run.succeeded for r in run.rounds}
    may_go, seen = [], set()
    for round_ in wanted:
        if round_.request_id in busy | seen or round_ in done or failures(round_) >= MAX:
            continue
        seen.add(round_.request_id)
        may_go.append(round_)
    assert [launch.round for launch in chosen] == may_go[:batch_size]
    assert all(launch.attempt == failures(launch.round) + 1 <= MAX for launch in chosen)


@MANY
@given(arrivals=st.lists(st.integers(1, 8), min_size=1, max_size=8, unique=True), batch_size=st.integers(1, 4),
       outcomes=st.lists(st.tuples(st.booleans(), st.integers(0, 7)), min_size=30, max_size=30))
def test_over_many_ticks_no_request_runs_twice_at_once_nor_fails_more_than_max_attempts(arrivals, batch_size,
                                                                                        outcomes):
    """A simulation: the open requests are wanted until a run completes them; each tick launches a
    batch, and runs finish at random, each request in it succeeding or failing on its own (a run
    succeeds as a whole only when all of its requests did)."""
    wanted = [Round(request_id) for request_id in arrivals]
    history: list[ErasureRunFacts] = []
    in_flight: list[list[Round]] = []
    completed: set[Round] = set()
    failed: dict[Round, int] = {}
    for tick, (finish, failing) in enumerate(outcomes):
        if finish and in_flight:
            batch = in_flight.pop(0)
            index = history.index(ErasureRunFacts(frozenset(batch), False, False))
            failures = {r for r in batch if r.request_id % 8 == failing}
            completed |= set(batch) - failures
            for round_ in failures:
                failed[round_] = failed.get(round_, 0) + 1
            history[index] = ErasureRunFacts(frozenset(batch), True, not failures)
        still = [r for r in wanted if r not in completed]
        chosen = launches(still, history, batch_size, MAX)
        assert len(chosen) <= batch_size
        busy = {r.request_id for batch in in_flight for r in batch}
        assert not busy & {launch.round.request_id for launch in chosen}, f"tick {tick}: launched in flight"
        assert not completed & {launch.round for launch in chosen}, f"tick {tick}: a done round launched again"
        if chosen:
            batch = [launch.round for launch in chosen]
            in_flight.append(batch)
            history.append(ErasureRunFacts(frozenset(batch), False, False))
        assert all(count <= MAX for count in failed.values())
