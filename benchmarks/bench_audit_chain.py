"""Benchmark: sealing and verifying the audit log's hash chains (engine/audit/seal.py, verify.py).

    python benchmarks/bench_audit_chain.py [--rows 1000000] [--domains 4] [--json FILE]

On a fresh PostgreSQL started here, --rows audit entries (spread over --domains domains, a uuid
record id each, time-ordered as the log is) are written once. Then:

  seal         every domain sealed from scratch (chunks of 10,000 rows per transaction)
  reseal       a second seal, with nothing new: what each run's audit step pays when idle
  verify       every chain walked and recomputed, the row counts compared, one anchor checked
  seal 10k     10,000 new rows (a run's worth) sealed onto the long chains

Target: verify ≤ 10 s for 1,000,000 rows. Prints a table, and writes the figures as
JSON (--json, default benchmarks/results/bench_audit_chain.json).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402

from retention_pipelines.engine.audit.anchor import anchor  # noqa: E402
from retention_pipelines.engine.audit.seal import seal  # noqa: E402
from retention_pipelines.engine.audit.verify import verify  # noqa: E402
from retention_pipelines.stores import AppDatabase  # noqa: E402
from retention_pipelines.stores.archive import LocalArchiveStore  # noqa: E402
from retention_pipelines_tests.support.servers import PostgresServer  # noqa: E402

SERVER_SETTINGS = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on", "shared_buffers": "512MB",
                   "max_wal_size": "8GB", "checkpoint_timeout": "30min"}
TARGET_VERIFY_SECONDS = 10.0
FILL = """
    INSERT INTO retention_audit_log (domain, record_id, action, run_id, occurred_at, policy_version, archive_uri,
                                     deadline)
    SELECT 'domain_' || mod(i, {domains}), md5(i::text)::uuid::text, 'deleted', 'run-' || (i / 10000),
           now() - make_interval(secs => ({rows} - i) / 10.0), 'bench+000000000000',
           CASE WHEN mod(i, 3) = 0 THEN 's3://archive/domain/2026/01/01/' || md5((i / 5000)::text) || '.jsonl.gz' END,
           now() - make_interval(secs => ({rows} - i) / 10.0) - interval '30 days'
    FROM generate_series({start}, {stop}) AS i
"""


def fill(engine: sa.Engine, start: int, stop: int, rows: int, domains: int, chunk: int = 1_000_000) -> None:
    for first in range(start, stop + 1, chunk):
        with engine.begin() as connection:
            connection.exec_driver_sql(FILL.format(rows=rows, domains=domains, start=first,
                                                   stop=min(first + chunk - 1, stop)))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("VACUUM ANALYZE retention_audit_log")


def timed(function, *args, **kwargs):
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--domains", type=int, default=4)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "bench_audit_chain.json")
    args = parser.parse_args()
    server = PostgresServer(SERVER_SETTINGS).start()
    try:
        database = AppDatabase(server.create_app_database("bench_chain"))
        _, fill_seconds = timed(fill, database.engine, 1, args.rows, args.rows, args.domains)
        print(f"{args.rows:,} audit rows written in {fill_seconds:.0f} s")
        sealed, seal_seconds = timed(seal, database)
        assert sealed.rows == args.rows, sealed
        resealed, reseal_seconds = timed(seal, database)
        assert resealed.rows == 0, resealed
        with database.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql("VACUUM ANALYZE retention_audit_chain")
        with tempfile.TemporaryDirectory() as folder:
            store = LocalArchiveStore(Path(folder))
            anchor(database, store)
            verified, verify_seconds = timed(verify, database, store)
        assert verified.intact and verified.rows_checked == args.rows, verified
        fill(database.engine, args.rows + 1, args.rows + 10_000, args.rows, args.domains)
        more, more_seconds = timed(seal, database)
        assert more.rows == 10_000, more
        with database.engine.connect() as connection:
            sizes = dict(connection.exec_driver_sql(
                "SELECT relname, pg_total_relation_size(oid) FROM pg_class "
                "WHERE relname IN ('retention_audit_log', 'retention_audit_chain')").all())
        database.dispose()
    finally:
        server.stop()
    figures = {
        "rows": args.rows, "domains": args.domains,
        "seal_seconds": round(seal_seconds, 2), "seal_rows_per_second": round(args.rows / seal_seconds),
        "reseal_idle_seconds": round(reseal_seconds, 3),
        "verify_seconds": round(verify_seconds, 2), "verify_rows_per_second": round(args.rows / verify_seconds),
        "verify_target_seconds": TARGET_VERIFY_SECONDS * args.rows / 1_000_000,
        "verify_passes": verify_seconds <= TARGET_VERIFY_SECONDS * args.rows / 1_000_000,
        "seal_10k_new_rows_seconds": round(more_seconds, 3),
        "audit_log_mb": round(sizes["retention_audit_log"] / 2**20, 1),
        "chain_mb": round(sizes["retention_audit_chain"] / 2**20, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    width = max(map(len, figures))
    for name, value in figures.items():
        print(f"{name:<{width}}  {value}")
    print(f"verify: {'PASS' if figures['verify_passes'] else 'FAIL'} ({figures['verify_seconds']} s for "
          f"{args.rows:,} rows; target ≤ {figures['verify_target_seconds']:g} s)")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(figures, indent=1) + "\n")
    print(f"written to {args.json}")


if __name__ == "__main__":
    main()
