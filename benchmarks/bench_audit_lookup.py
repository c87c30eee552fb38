"""Benchmark: the evidence for one record (`retention audit show`) on a long audit log, through
the evidence index the index job fills after the fact, and what an index on the log itself would
cost the audit writes instead — each against its baseline in the same run.

    python benchmarks/bench_audit_lookup.py [--rows 10000000] [--lookups 200] [--writes 1000000]

On a fresh PostgreSQL started here, --rows audit entries (four domains, a uuid record id each,
time-ordered as the log is) are written once. Then:

  scan       what a lookup costs with no index at all: a scan of the log (5 random ids)
  indexing   index_records() over the whole log: the index job's work, in rows/s
  lookups    record_evidence() for --lookups random ids through the evidence index (target: well
             under 100 ms), with the tail of the log since the index written unindexed (as between
             two seal jobs: 100,000 rows)
  writes     --writes record rows INSERTed into a copy of the record table: without an index on record_id
             (the baseline, as the runs write), with a btree and with a hash index on it

It prints the times in ms, the indexing rate, and the write throughput with each index on the log
as a ratio of that without one; and writes the figures as JSON (--json).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402

from retention_pipelines.engine.audit.evidence import index_records, record_evidence  # noqa: E402
from retention_pipelines.stores import AppDatabase  # noqa: E402
from retention_pipelines_tests.support.servers import PostgresServer  # noqa: E402

SERVER_SETTINGS = {"fsync": "on", "synchronous_commit": "on", "shared_buffers": "512MB", "max_wal_size": "8GB",
                   "checkpoint_timeout": "30min"}
# Batches of 10,000 records (their links are not what this measures: a lookup never reads them).
FILL = """
    INSERT INTO retention_audit_batches (id, domain, seq, action, run_id, occurred_at, policy_version, records,
                                         prev_link, link)
    SELECT b, (ARRAY['quiz_responses','magic_link_tokens','meal_plans','email_blacklist'])[1 + mod(b, 4)], b,
           'deleted', 'run-' || b, now() - make_interval(secs => ({rows} - b * 10000) / 10.0), 'bench+000000000000',
           10000, '', ''
    FROM generate_series({start} / 10000 + 1, {stop} / 10000 + 1) AS b ON CONFLICT DO NOTHING;
    INSERT INTO {records} (id, batch_id, record_id, deadline)
    SELECT i, i / 10000 + 1, md5(i::text)::uuid::text, now() - make_interval(secs => ({rows} - i) / 10.0)
    FROM generate_series({start}, {stop}) AS i
"""
def fill(engine: sa.Engine, rows: int, chunk: int = 1_000_000) -> None:
    for start in range(1, rows + 1, chunk):
        with engine.begin() as connection:
            connection.exec_driver_sql(FILL.format(rows=rows, start=start, stop=min(start + chunk - 1, rows),
                                                   records="retention_audit_records"))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("VACUUM ANALYZE retention_audit_batches")
        connection.exec_driver_sql("VACUUM ANALYZE retention_audit_records")


def lookups(database: AppDatabase, ids: list[str]) -> list[float]:
    times = []
    for record_id in ids:
        started = time.perf_counter()
        found = record_evidence(database, record_id)
        times.append((time.perf_counter() - started) * 1000)
        assert len(found) == 1, (record_id, found)
    return times


def write_rate(engine: sa.Engine, writes: int, method: str | None) -> float:
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE IF EXISTS audit_copy")
        connection.exec_driver_sql("CREATE TABLE audit_copy (LIKE retention_audit_records INCLUDING DEFAULTS)")
        connection.exec_driver_sql("CREATE INDEX ON audit_copy USING brin (batch_id)")
        if method:
            connection.exec_driver_sql(f"CREATE INDEX ON audit_copy USING {method} (record_id)")
    started = time.perf_counter()
    with engine.begin() as connection:
        connection.exec_driver_sql(FILL.split(";")[1].format(rows=writes, start=1, stop=writes, records="audit_copy"))
    return writes / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--lookups", type=int, default=200)
    parser.add_argument("--writes", type=int, default=1_000_000)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    server = PostgresServer(SERVER_SETTINGS).start()
    try:
        url = server.create_app_database("bench_audit")
        database = AppDatabase(url)
        started = time.perf_counter()
        fill(database.engine, args.rows)
        print(f"{args.rows:,} audit rows written in {time.perf_counter() - started:.0f} s")
        chosen = [str(uuid.UUID(hashlib.md5(str(i).encode()).hexdigest()))  # the ids FILL wrote
                  for i in random.Random(7).sample(range(1, args.rows + 1), args.lookups)]
        tail = 100_000
        scans = sorted(lookups(database, chosen[:5]))  # nothing indexed yet: the whole log is the tail
        started = time.perf_counter()
        indexed_rows = index_records(database, settle_seconds=5)
        indexing = indexed_rows / (time.perf_counter() - started)
        with database.engine.begin() as connection:
            connection.exec_driver_sql(f"DELETE FROM retention_audit_record_index WHERE audit_id > {args.rows - tail}")
            connection.exec_driver_sql("UPDATE retention_audit_record_index_state "
                                       f"SET indexed_through = {args.rows - tail}")
        with database.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql("VACUUM ANALYZE retention_audit_record_index")
        lookups(database, chosen[:10])  # warm the connection pool and the index's upper levels
        indexed = sorted(lookups(database, chosen))
        rates = {method: write_rate(database.engine, args.writes, method) for method in ("btree", "hash", None)}
        database.dispose()
    finally:
        server.stop()
    p50, p99 = statistics.median(indexed), indexed[min(len(indexed) - 1, int(0.99 * len(indexed)))]
    figures = {"rows": args.rows, "scan_median_ms": round(statistics.median(scans), 1),
               "lookup_p50_ms": round(p50, 2), "lookup_p99_ms": round(p99, 2), "lookup_max_ms": round(indexed[-1], 2),
               "lookup_target_ms": 100, "lookup_pass": indexed[-1] < 100, "indexing_rows_per_s": round(indexing),
               **{f"log_writes_with_{m}_ratio": round(rates[m] / rates[None], 2) for m in ("btree", "hash")}}
    print(f"no index at all, a scan of the log (5 ids): median {figures['scan_median_ms']:.0f} ms")
    print(f"the index job's indexing: {indexing:,.0f} rows/s ({args.rows / indexing:.0f} s for the whole log)")
    print(f"through the evidence index, a {tail:,}-row tail unindexed ({args.lookups} ids): p50 {p50:.2f} ms, "
          f"p99 {p99:.2f} ms, max {indexed[-1]:.2f} ms (target well under 100 ms: "
          f"{'pass' if figures['lookup_pass'] else 'FAIL'})")
    for method in ("btree", "hash"):
        print(f"had the log itself an {method} index on record_id, its writes: {rates[method]:,.0f} rows/s, "
              f"{rates[method] / rates[None]:.2f}× the {rates[None]:,.0f} rows/s without")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
