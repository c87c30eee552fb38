"""Concurrency. Eight runs of one domain at once, each its own process: with the
Redis lock as in production they queue and run one at a time, without any lock DELETE … RETURNING
still audits each row once; and runs of two domains do not wait for each other's lock."""

from __future__ import annotations

from datetime import timedelta

from retention_pipelines_tests.support.app_rows import bulk_insert_pg, insert_token_expiring_at, remaining_ids
from retention_pipelines_tests.support.audit_rows import audit_rows
from retention_pipelines_tests.support.figures import record
from retention_pipelines_tests.support.invariants import Seeded, converged
from retention_pipelines_tests.support.runners.process import RunnerProcess

RUNS, DUE, BATCH = 8, 2000, 50


class DomainRunner(RunnerProcess):
    MODULE = "retention_pipelines_tests.support.runners.run_with_kill_points"


def start(pg_url: str, archive_url: str, run_id: str, **extra) -> DomainRunner:
    return DomainRunner(database_url=pg_url, archive_url=archive_url, batch_size=BATCH, run_id=run_id, **extra)


def eight_runs(pg_url: str, archive_url: str, **extra) -> list[dict]:
    """Eight runs of quiz_responses started together (each waits for its "go" once ready, or
    once it holds the lock); their `done` events."""
    runs = [start(pg_url, archive_url, f"run-{i}", **extra) for i in range(RUNS)]
    try:
        for run in runs:
            run.wait_for("ready")
        if not extra.get("redis_url"):
            for run in runs:
                run.go()
        done = [run.wait_for("done", timeout=240) for run in runs]
        codes = [run.finish(60) for run in runs]
        assert codes == [0] * RUNS, [run.stderr_tail()[-500:] for run in runs]
    finally:
        for run in runs:
            run.close()
    for run, event in zip(runs, done):
        event["acquired"] = next((e["at"] for e in run.seen if e.get("event") == "acquired"), None)
    return done


def test_eight_runs_of_one_domain_with_the_lock_queue_and_act_on_each_row_once(pg_url, pg_database, redis_url,
                                                                              local_archive_url):
    bulk_insert_pg(pg_database, DUE, "2 days")
    seeded = Seeded("quiz_responses", remaining_ids(pg_database))
    done = eight_runs(pg_url, local_archive_url, redis_url=redis_url, lock_wait=240)
    # One holder at a time: each run took the lock after the one before it let go.
    spans = sorted((e["acquired"], e["released_at"]) for e in done)
    overlaps = sum(1 for (_, released), (acquired, _) in zip(spans, spans[1:]) if acquired < released)
    problems = converged(pg_database, seeded)
    acted = sorted(e["acted_on"] for e in done)
    entries = len(audit_rows(pg_database, "deleted"))
    record("concurrency: 8 runs of one domain, Redis lock", "each row deleted and audited once; 0 overlaps",
           f"{entries} audit entries for {DUE} rows; {overlaps} overlaps; {len(problems)} violations",
           not problems and not overlaps and entries == DUE)
    assert not problems, problems
    assert overlaps == 0, spans
    assert acted == [0] * (RUNS - 1) + [DUE]  # the first holder did it all; the others found nothing left
    assert entries == DUE


def test_eight_runs_of_one_domain_without_any_lock_act_on_each_row_once(pg_url, pg_database, local_archive_url):
    bulk_insert_pg(pg_database, DUE, "2 days")
    seeded = Seeded("quiz_responses", remaining_ids(pg_database))
    done = eight_runs(pg_url, local_archive_url, wait_for_go=True)
    problems = converged(pg_database, seeded)
    entries = len(audit_rows(pg_database, "deleted"))
    acting = sum(1 for e in done if e["acted_on"])
    record("concurrency: 8 runs of one domain, no lock", "each row deleted and audited once",
           f"{entries} audit entries for {DUE} rows, {acting} runs deleting; {len(problems)} violations",
           not problems and entries == DUE)
    assert not problems, problems
    assert sum(e["acted_on"] for e in done) == DUE == entries
    assert all(e["consistent"] for e in done)


def test_a_run_of_another_domain_finishes_while_the_first_holds_its_lock(pg_url, pg_database, redis_url,
                                                                         local_archive_url):
    bulk_insert_pg(pg_database, DUE, "2 days")
    quiz = Seeded("quiz_responses", remaining_ids(pg_database))
    now = pg_database.now()
    tokens = Seeded("magic_link_tokens", set(insert_token_expiring_at(
        pg_database, [now - timedelta(minutes=5, seconds=i) for i in range(300)])))
    first = start(pg_url, local_archive_url, "quiz", redis_url=redis_url, wait_for_go=True)
    second = None
    try:
        first.wait_for("acquired")  # and holds the quiz_responses lock until its "go"
        second = start(pg_url, local_archive_url, "tokens", domain="magic_link_tokens", redis_url=redis_url,
                       lock_wait=0)
        second_done = second.wait_for("done", timeout=120)
        assert second.finish(60) == 0, second.stderr_tail()
        first_still_waiting = not first.has_seen("done") and first.process.poll() is None
        first.go()
        first_done = first.wait_for("done", timeout=120)
        assert first.finish(60) == 0, first.stderr_tail()
    finally:
        first.close()
        if second is not None:
            second.close()
    problems = converged(pg_database, quiz) + converged(pg_database, tokens)
    record("concurrency: two domains at once", "the second finishes while the first holds its lock",
           f"magic_link_tokens done ({second_done['acted_on']} rows) while quiz_responses held its lock: "
           f"{'yes' if first_still_waiting else 'no'}; {len(problems)} violations",
           first_still_waiting and not problems)
    assert first_still_waiting, "the first run ended before the second domain's run finished"
    assert second_done["acted_on"] == len(tokens.ids) and first_done["acted_on"] == DUE
    assert second_done["finished_at"] < first_done["released_at"]
    assert not problems, problems
