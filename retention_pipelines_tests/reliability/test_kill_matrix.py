"""The kill matrix. figures.kills() runs over seeded databases, each SIGKILLed at a
random instant of one step (find, archive write, archive verify, delete transaction, audit write,
blob delete, row redact); after each kill the invariants must hold and the audit chain verify with
no entry outside it (a killed writer leaves whole batches or none), and a rerun must finish the job
without doing anything twice."""

from __future__ import annotations

import random
import time
import uuid
from datetime import timedelta

import boto3

from retention_pipelines.engine.audit.verify import verify
from retention_pipelines.stores import AppDatabase
from retention_pipelines_tests.support.app_rows import bulk_insert_pg, insert_meal_plans_at, remaining_ids
from retention_pipelines_tests.support.databases import new_database
from retention_pipelines_tests.support.figures import kills, record
from retention_pipelines_tests.support.invariants import Seeded, assert_invariants, converged
from retention_pipelines_tests.support.runners.process import RunnerProcess, backend_gone
from retention_pipelines_tests.support.runners.run_with_kill_points import build_engine

SEED = 9  # the matrix is the same on every machine: a failure can be replayed kill by kill
STEPS = ["find", "archive write", "archive verify", "delete transaction", "audit write", "blob delete", "row redact"]
# How far into each step a kill may land: counted in calls of its kill points (runner.KILL_POINTS),
# each batch's calls within the runs below (400 quiz rows or 40 meal plans, batches of 50 or 10).
OCCURRENCES = {"find": 2, "archive write": 24, "archive verify": 24, "delete transaction": 12,
               "audit write": 6, "blob delete": 6, "row redact": 6}
QUIZ_ROWS, QUIZ_BATCH, PLANS, PLANS_BATCH = 400, 50, 40, 10


class MatrixRunner(RunnerProcess):
    MODULE = "retention_pipelines_tests.support.runners.run_with_kill_points"


def seed(step: str, database: AppDatabase, url: str, tmp_path, archived: bool) -> tuple[Seeded, dict]:
    """The case's rows (all due) and its runner's config."""
    archive_url = (tmp_path / "archive").as_uri()
    if step in ("blob delete", "row redact"):
        bucket = f"hot-{uuid.uuid4().hex[:10]}"
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=bucket)
        keys = [f"plans/{i}.pdf" for i in range(PLANS)]
        for key in keys:
            s3.put_object(Bucket=bucket, Key=key, Body=b"%PDF-1.4\n" + key.encode())
        ids = insert_meal_plans_at(database, [database.now() - timedelta(days=95, minutes=i) for i in range(PLANS)],
                                   keys)
        return (Seeded("meal_plans", set(ids), archive_url, bucket, dict(zip(ids, keys))),
                {"domain": "meal_plans", "hot_bucket": bucket, "batch_size": PLANS_BATCH, "archive_url": archive_url,
                 "database_url": url, "run_id": "killed"})
    bulk_insert_pg(database, QUIZ_ROWS, "2 days")
    return (Seeded("quiz_responses", remaining_ids(database), archive_url if archived else None),
            {"domain": "quiz_responses", "archive": archived, "batch_size": QUIZ_BATCH, "archive_url": archive_url,
             "database_url": url, "run_id": "killed"})


def chain_violations(database: AppDatabase) -> list[str]:
    """The audit chain intact, every entry in it: a killed writer's transaction leaves whole batches
    or none, and its head where its last committed batch is."""
    verification = verify(database)
    problems = [f"audit chain broken: {link.message}" for link in verification.broken]
    if verification.outside_chain:
        problems.append(f"{verification.outside_chain} audit rows outside the chain")
    return problems


def kill_once(index: int, step: str, rng: random.Random, postgres_server, tmp_path) -> tuple[list[str], list[str]]:
    """One kill: (violations after the kill, what the rerun failed to do)."""
    name = f"kill-matrix-{index}"
    url = new_database(postgres_server)
    database = AppDatabase(url)
    folder = tmp_path / name
    hold = rng.random() < 0.5  # held at the kill point, or killed a random delay after it
    kill_at = {"step": step, "occurrence": rng.randint(1, OCCURRENCES[step]), "hold": hold}
    delay = 0.0 if hold else rng.uniform(0.0, 0.05)
    seeded, config = seed(step, database, f"{url}?application_name={name}", folder,
                          archived=step in ("archive write", "archive verify") or rng.random() < 0.5)
    runner = MatrixRunner(**config, kill_at=kill_at)
    try:
        runner.wait_for("at", timeout=90)
        time.sleep(delay)
        runner.kill()
    finally:
        runner.close()
    try:
        assert runner.process.returncode == -9, f"kill {index} ({step}): the runner ended by itself"
        backend_gone(database, name)
        violations = assert_invariants(database, seeded) + chain_violations(database)
        report = build_engine({**config, "database_url": url})[1].run("rerun")
        failures = (converged(database, seeded) + chain_violations(database)
                    + ([] if report.audited.consistent else ["rerun audit inconsistent"]))
    finally:
        database.dispose()
    where = f"kill {index} ({step}, {kill_at}, delay {delay:.3f}s)"
    return [f"{where}: {v}" for v in violations], [f"{where}: {f}" for f in failures]


def test_kill_matrix(postgres_server, s3_env, tmp_path):
    rng = random.Random(SEED)
    total = kills()
    # Every step at least once (in turn), then the rest of the matrix's steps drawn at random.
    steps = [STEPS[i] if i < len(STEPS) else rng.choice(STEPS) for i in range(total)]
    violations, unconverged = [], []
    for index, step in enumerate(steps):
        after_kill, after_rerun = kill_once(index, step, rng, postgres_server, tmp_path)
        violations += after_kill
        unconverged += [after_rerun] if after_rerun else []
    covered = sorted(set(steps))
    record("kill matrix: kills", str(total), f"{total} ({len(covered)} of {len(STEPS)} steps)",
           len(covered) == min(total, len(STEPS)))
    record("kill matrix: invariant violations", "0", f"{len(violations)} in {total} kills", not violations)
    record("kill matrix: reruns converged", f"{total}/{total}", f"{total - len(unconverged)}/{total}",
           not unconverged)
    assert not violations, "\n".join(violations)
    assert not unconverged, "\n".join(line for failed in unconverged for line in failed)
