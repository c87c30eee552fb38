"""One retention run (any domain) in its own process, with kill points, for the kill matrix and the
concurrency cases of the reliability suite.

    python -m retention_pipelines_tests.support.runners.run_with_kill_points '<json config>'

Prints one JSON line per event on stdout: ready, acquired / locked, "at" (a kill point reached),
done. Config: database_url, archive_url, domain, run_id, batch_size, archive (quiz_responses with its
archive on), hot_bucket (meal_plans), redis_url + lock_wait, wait_for_go, kill_at = {"step",
"occurrence", "hold"}.

A kill point wraps a real store or statement builder of this process's engine (test code only):
at the step's `occurrence`-th call it emits `at`; with "hold" it then blocks that thread forever
(the kill lands there, inside the step); without, it goes on and the test kills after a random
delay. A run with kill_at never exits by itself: it waits at the end, so every kill lands in a live
process, wherever the random delay puts it.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from datetime import timedelta

# The steps of the kill matrix and the calls that are inside them: (owner, method name, before or
# after the real call). The act step's statements run inside its batch transaction, uncommitted.
KILL_POINTS = {
    "find": [("table", "held_due_clocks", "before"), ("table", "held_due_clocks", "after")],
    "archive write": [("archive_store", "put", "before"), ("archive_store", "put", "after"),
                      ("archive_store", "put_cold_streamed", "after")],
    "archive verify": [("archive_store", "get", "before"), ("archive_store", "get", "after")],
    "delete transaction": [("table", "act_next", "after"), ("table", "act_batch", "after"),
                           ("table", "act_next", "before"), ("table", "act_batch", "before")],
    # The audit of a batch: its rows acted on and their record rows written, the batch not yet linked,
    # or linked and uncommitted (PostgreSQL); or a batch written by the one writer, its head locked,
    # uncommitted.
    "audit write": [("acting", "link_batch", "before"), ("acting", "link_batch", "after"),
                    ("audit", "_write_batch", "before"), ("audit", "_write_batch", "after")],
    "blob delete": [("blob_store", "delete_many", "before"), ("blob_store", "delete_many", "after")],
    "row redact": [("table", "redact_rows", "after"), ("objects", "act", "after")],
}


def emit(**event) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


class KillPoint:
    """Counts the calls of one step's wrapped methods (all threads); the chosen one emits `at`."""

    def __init__(self, step: str, occurrence: int, hold: bool):
        self.step, self.occurrence, self.hold = step, occurrence, hold
        self.calls, self.counting, self.guard = 0, True, threading.Lock()

    def reached(self, where: str) -> None:
        with self.guard:
            if not self.counting:
                return
            self.calls += 1
            if self.calls != self.occurrence:
                return
        emit(event="at", step=self.step, where=where)
        if self.hold:
            threading.Event().wait()  # this thread stays inside the step until the kill

    def wrap(self, owner, name: str, when: str) -> None:
        real = getattr(owner, name)

        def wrapped(*args, **kwargs):
            if when == "before":
                self.reached(f"before {name}")
            result = real(*args, **kwargs)
            if when == "after":
                self.reached(f"after {name}")
            return result

        setattr(owner, name, wrapped)


def build_engine(config: dict):
    from retention_pipelines.engine import RetentionEngine
    from retention_pipelines.policies import load_policies
    from retention_pipelines.policies.model import Pacing
    from retention_pipelines.stores import AppDatabase, archive_store_from_url
    from retention_pipelines.stores.blob import S3BlobStore
    from retention_pipelines_tests.support.archives import configured_keys

    policies = load_policies()
    domain = config.get("domain", "quiz_responses")
    policy = policies.domains[domain]
    # Batches of exactly batch_size rows: what the tests count in.
    update = {"batch_size": config.get("batch_size", 50), "pacing": Pacing(batch_target_ms=None)}
    if config.get("archive"):
        update["archive"] = policy.archive.model_copy(update={"enabled": True, "keep_for": timedelta(days=365)})
    policy = policy.model_copy(update=update)
    database = AppDatabase(config["database_url"])
    blob_store = S3BlobStore(config["hot_bucket"], "") if config.get("hot_bucket") else None
    engine = RetentionEngine(policy, policies.policy_version, database, archive_store_from_url(config["archive_url"]),
                             blob_store=blob_store, keys=configured_keys(database) if policy.archive.enabled else None)
    return database, engine


def place_kill_point(engine, kill_at: dict) -> KillPoint:
    point = KillPoint(kill_at["step"], kill_at["occurrence"], kill_at.get("hold", True))
    from retention_pipelines.engine.audit import entries
    from retention_pipelines.engine.retention import table as acting

    owners = {"table": engine.table, "archive_store": engine.archive_store, "blob_store": engine.blob_store,
              "objects": engine.objects, "audit": entries, "acting": acting}
    chosen = [tuple(p) for p in kill_at["points"]] if kill_at.get("points") else KILL_POINTS[point.step]
    for owner, name, when in chosen:
        if owners[owner] is not None:
            point.wrap(owners[owner], name, when)
    if point.step == "archive verify":  # the act step reads objects back too: count the archive step's reads only
        act = engine.act

        def act_without_counting(*args, **kwargs):
            point.counting = False
            return act(*args, **kwargs)

        engine.act = act_without_counting
    return point


def main() -> int:
    config = json.loads(sys.argv[1])
    from retention_pipelines_tests.support.runners.retention_run import run_under_lock

    database, engine = build_engine(config)
    if config.get("kill_at"):
        place_kill_point(engine, config["kill_at"])
    emit(event="ready")
    ran = run_under_lock(engine, config)
    if ran is None:
        return 3
    report, released_at = ran
    emit(event="done", acted_on=report.acted.acted_on, consistent=report.audited.consistent,
         released_at=released_at, finished_at=time.time())
    if config.get("kill_at"):
        threading.Event().wait()  # the test kills it, wherever its delay lands
    return 0


if __name__ == "__main__":
    sys.exit(main())
