"""One retention run of quiz_responses in its own process, for the kill and concurrency tests.

    python -m retention_pipelines_tests.support.runners.retention_run '<json config>'

Prints one JSON line per event on stdout (ready, acquired, locked, done). With "wait_for_go",
it reads a line from stdin before running (or, holding a lock, before running under it).
"""

from __future__ import annotations

import json
import sys
import time
from datetime import timedelta
from pathlib import Path


def emit(**event) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def run_under_lock(engine, config: dict):
    """The run as the tests start it: under the domain's Redis lock when config has redis_url
    (emitting acquired, or locked and returning None), after a line on stdin with wait_for_go.
    Returns (report, when the lock was released)."""
    from retention_pipelines.stores import DomainLocked, domain_locks

    lock = None
    if config.get("redis_url"):
        locks = domain_locks(config["redis_url"], Path(config.get("lock_dir", "/nonexistent")),
                             config.get("lock_ttl", 30.0))
        try:
            lock = locks.acquire(engine.policy.name, wait_seconds=config.get("lock_wait", 0.0))
        except DomainLocked as exc:
            emit(event="locked", message=str(exc))
            return None
        emit(event="acquired", at=time.time())
    if config.get("wait_for_go"):
        sys.stdin.readline()
    released_at = None
    try:
        report = engine.run(config["run_id"], lock=lock)
    finally:
        if lock is not None:
            released_at = time.time()
            lock.release()
    return report, released_at


def main() -> int:
    config = json.loads(sys.argv[1])
    from retention_pipelines.engine import RetentionEngine
    from retention_pipelines.policies import load_policies
    from retention_pipelines.policies.model import Pacing
    from retention_pipelines.stores import AppDatabase, archive_store_from_url
    from retention_pipelines_tests.support.archives import configured_keys

    policies = load_policies()
    policy = policies.domains["quiz_responses"]
    # Batches of exactly batch_size rows: what the kill and concurrency tests count in.
    update = {"batch_size": config.get("batch_size", 50), "pacing": Pacing(batch_target_ms=None),
              "parallel_batches": config.get("parallel_batches", policy.parallel_batches)}
    if config.get("archive"):
        update["archive"] = policy.archive.model_copy(update={"enabled": True, "keep_for": timedelta(days=365)})
    policy = policy.model_copy(update=update)
    database = AppDatabase(config["database_url"])
    engine = RetentionEngine(policy, policies.policy_version, database, archive_store_from_url(config["archive_url"]),
                             keys=configured_keys(database) if policy.archive.enabled else None)
    emit(event="ready")
    ran = run_under_lock(engine, config)
    if ran is None:
        return 3
    report, released_at = ran
    emit(event="done", acted_on=report.acted.acted_on, archived=report.archived.rows,
         consistent=report.audited.consistent, released_at=released_at)
    return 0


if __name__ == "__main__":
    sys.exit(main())
