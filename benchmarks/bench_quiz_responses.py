"""Benchmark: the engine's delete path against the database's own bare DELETE, in the same run.

    python benchmarks/bench_quiz_responses.py [--rows 2000000] [--batch-size 5000]

Half of --rows quiz_responses rows (≈1.5 KB JSON answers each, time-ordered as an append-only
app table is) are expired. On a fresh PostgreSQL started here, each contender gets the same data
(a copy of one template database) and the same server:

  baseline     DELETE FROM quiz_responses WHERE created_at <= cutoff    (one statement)
  engine       the retention engine: keyset batches, DELETE … RETURNING + audit rows, per batch
  engine+arch  the same with the archive on (gzip JSON lines to a local folder, read back, verified)

It prints rows/s for each, the ratio to the baseline, the longest batch transaction and the peak
memory (RSS) of the process that ran the engine. Figures are ratios measured in one run, so that
the machine's speed cancels out.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg2  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from retention_pipelines_tests.servers import PostgresServer  # noqa: E402

SERVER_SETTINGS = {  # durable, as production: every commit is flushed
    "fsync": "on", "synchronous_commit": "on", "full_page_writes": "on",
    "shared_buffers": "512MB", "max_wal_size": "8GB", "checkpoint_timeout": "30min",
}


def build_template(server: PostgresServer, rows: int) -> None:
    engine = sa.create_engine(server.create_app_database("bench_template"))
    # Time-ordered: row i was created i seconds after the first; the older half is expired.
    with engine.begin() as connection:
        connection.exec_driver_sql(f"""
            INSERT INTO quiz_responses (id, session_id, email, answers, created_at)
            SELECT gen_random_uuid(), gen_random_uuid(), 'bench-' || i || '@example.invalid',
                   jsonb_build_object('weight_kg', mod(i, 100), 'goal', 'lose', 'notes', repeat(md5(i::text), 45)),
                   now() - interval '24 hours' - make_interval(secs => {rows // 2} - i)
            FROM generate_series(1, {rows}) AS i
        """)
    engine.dispose()
    _vacuum(server, "bench_template")


def _vacuum(server: PostgresServer, database: str) -> None:
    connection = psycopg2.connect(server.dsn(database))
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
        cursor.execute("CHECKPOINT")
    connection.close()


def fresh_copy(server: PostgresServer, name: str) -> str:
    connection = psycopg2.connect(server.dsn("postgres"))
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')
        cursor.execute(f'CREATE DATABASE "{name}" TEMPLATE bench_template')
        cursor.execute("CHECKPOINT")
    connection.close()
    _vacuum(server, name)
    return server.url(name)


def bare_delete(server: PostgresServer, database: str) -> dict:
    connection = psycopg2.connect(server.dsn(database))
    with connection.cursor() as cursor:
        started = time.perf_counter()
        cursor.execute("DELETE FROM quiz_responses WHERE created_at <= now() - interval '24 hours'")
        deleted = cursor.rowcount
        connection.commit()
        seconds = time.perf_counter() - started
    connection.close()
    return {"rows": deleted, "seconds": seconds}


def run_engine(url: str, archive: bool, batch_size: int) -> dict:
    """In a child process, so that its peak RSS is the engine's own."""
    result = subprocess.run([sys.executable, __file__, "--child", url, "--batch-size", str(batch_size)]
                            + (["--archive"] if archive else []), capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"engine run failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def child(url: str, archive: bool, batch_size: int) -> None:
    from retention_pipelines.engine import RetentionEngine
    from retention_pipelines.policies import load_policies
    from retention_pipelines.stores import AppDatabase, archive_store_from_url

    policies = load_policies()
    policy = policies.domains["quiz_responses"]
    policy = policy.model_copy(update={"batch_size": batch_size,
                                       "archive": policy.archive.model_copy(update={"enabled": archive})})
    with tempfile.TemporaryDirectory() as folder:
        engine = RetentionEngine(policy, policies.policy_version, AppDatabase(url),
                                 archive_store_from_url(Path(folder).as_uri()))
        started = time.perf_counter()
        report = engine.run("benchmark")
        seconds = time.perf_counter() - started
    print(json.dumps({
        "rows": report.acted.acted_on, "seconds": seconds, "batches": report.acted.batches,
        "longest_batch_ms": report.acted.longest_batch_seconds * 1000,
        "archive_seconds": report.archived.seconds, "act_seconds": report.acted.seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--batch-size", type=int, default=10000)
    parser.add_argument("--child")
    parser.add_argument("--archive", action="store_true")
    parser.add_argument("--skip-archive", action="store_true", help="measure the delete path only")
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.archive, args.batch_size)

    server = PostgresServer(SERVER_SETTINGS).start()
    try:
        started = time.perf_counter()
        build_template(server, args.rows)
        print(f"data: {args.rows} rows, {args.rows // 2} expired, built in {time.perf_counter() - started:.0f}s")
        fresh_copy(server, "bench_baseline")
        baseline = bare_delete(server, "bench_baseline")
        base_rate = baseline["rows"] / baseline["seconds"]
        print(f"baseline bare DELETE : {baseline['rows']} rows in {baseline['seconds']:.1f}s = {base_rate:,.0f} rows/s")
        contenders = [("engine (no archive)", False)] + ([] if args.skip_archive else [("engine + archive", True)])
        for label, archive in contenders:
            result = run_engine(fresh_copy(server, "bench_engine"), archive, args.batch_size)
            rate = result["rows"] / result["seconds"]
            print(f"{label:21}: {result['rows']} rows in {result['seconds']:.1f}s = {rate:,.0f} rows/s, "
                  f"ratio {rate / base_rate:.2f}x baseline; {result['batches']} batches, longest "
                  f"{result['longest_batch_ms']:.0f} ms; peak RSS {result['peak_rss_mb']:.0f} MB"
                  + (f"; archive {result['archive_seconds']:.1f}s, delete {result['act_seconds']:.1f}s" if archive else ""))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
