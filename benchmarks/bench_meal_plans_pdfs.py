"""Benchmark: meal_plans PDFs on an S3 API (moto's server) — archive + delete + redact.

    python benchmarks/bench_meal_plans_pdfs.py [--objects 10000]

--objects expired meal plans, each with a small PDF in the hot bucket. In the same run:

  baseline  the bare S3 work for the same number of objects, one after another: GET from the
            hot bucket, PUT to the archive bucket, then DeleteObjects in requests of 1,000 keys
  engine    the meal_plans retention run: PDFs archived and verified, deleted from the hot
            bucket, rows redacted and audited on PostgreSQL

It prints objects/s for each, their ratio, the share of the engine's time spent in S3 calls and
the longest batch transaction.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import boto3  # noqa: E402

from retention_pipelines.engine import RetentionEngine  # noqa: E402
from retention_pipelines.policies import load_policies  # noqa: E402
from retention_pipelines.stores import AppDatabase  # noqa: E402
from retention_pipelines.stores.archive import S3ArchiveStore  # noqa: E402
from retention_pipelines.stores.blob import S3BlobStore  # noqa: E402
from retention_pipelines_tests.app_rows import insert_meal_plans_at  # noqa: E402
from retention_pipelines_tests.servers import MotoS3Server, PostgresServer  # noqa: E402

PDF = b"%PDF-1.4\n" + b"x" * 20_000 + b"\n%%EOF\n"  # a small plan, ~20 KB


class TimedClient:
    """A boto3 client that adds up the wall time spent in its calls (from any thread)."""

    def __init__(self, client, clock: dict):
        self._client, self._clock, self._lock = client, clock, threading.Lock()

    def __getattr__(self, name):
        attribute = getattr(self._client, name)
        if not callable(attribute) or name.startswith("get_paginator"):
            return attribute

        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return attribute(*args, **kwargs)
            finally:
                with self._lock:
                    self._clock["seconds"] += time.perf_counter() - started
                    self._clock["calls"] += 1
        return timed


def fill(bucket: str, keys: list[str]) -> None:
    client = boto3.client("s3")
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda key: client.put_object(Bucket=bucket, Key=key, Body=PDF), keys))


def bare_s3(hot: str, archive: str, keys: list[str]) -> float:
    client = boto3.client("s3")
    started = time.perf_counter()
    for key in keys:
        data = client.get_object(Bucket=hot, Key=key)["Body"].read()
        client.put_object(Bucket=archive, Key=f"bare/{key}", Body=data)
    for start in range(0, len(keys), 1000):
        client.delete_objects(Bucket=hot, Delete={"Objects": [{"Key": k} for k in keys[start:start + 1000]],
                                                  "Quiet": True})
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=10_000)
    args = parser.parse_args()
    postgres, moto = PostgresServer().start(), MotoS3Server().start()
    import os

    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
                      AWS_ENDPOINT_URL=moto.endpoint)
    try:
        s3 = boto3.client("s3")
        hot, archive = f"hot-{uuid.uuid4().hex[:8]}", f"archive-{uuid.uuid4().hex[:8]}"
        for bucket in (hot, archive):
            s3.create_bucket(Bucket=bucket)

        bare_keys = [f"bare-plans/{i}.pdf" for i in range(args.objects)]
        fill(hot, bare_keys)
        bare_seconds = bare_s3(hot, archive, bare_keys)

        database = AppDatabase(postgres.create_app_database("bench_pdfs"))
        keys = [f"plans/{i}.pdf" for i in range(args.objects)]
        fill(hot, keys)
        now = database.now()
        insert_meal_plans_at(database, [now - timedelta(days=91, seconds=i) for i in range(args.objects)], keys)

        clock = {"seconds": 0.0, "calls": 0}
        policies = load_policies()
        engine = RetentionEngine(
            policies.domains["meal_plans"], policies.policy_version, database,
            S3ArchiveStore(archive, "retention", client=TimedClient(boto3.client("s3"), clock)),
            blob_store=S3BlobStore(hot, "", client=TimedClient(boto3.client("s3"), clock)))
        started = time.perf_counter()
        report = engine.run("bench-pdfs")
        seconds = time.perf_counter() - started
        assert report.acted.acted_on == args.objects and report.acted.failed == 0, report.acted

        bare_rate, rate = args.objects / bare_seconds, report.acted.acted_on / seconds
        print(f"baseline bare S3 (get, put, bulk delete): {args.objects} objects in {bare_seconds:.1f}s "
              f"= {bare_rate:,.0f} objects/s")
        print(f"engine (archive + verify + delete + redact + audit): {report.acted.acted_on} objects in "
              f"{seconds:.1f}s = {rate:,.0f} objects/s, ratio {rate / bare_rate:.2f}x baseline; "
              f"S3 calls {clock['calls']} taking {clock['seconds']:.1f}s of thread time "
              f"({clock['seconds'] / seconds:.0%} of the run's wall time, {report.acted.batches} batches, "
              f"longest {report.acted.longest_batch_seconds * 1000:.0f} ms)")
    finally:
        moto.stop()
        postgres.stop()


if __name__ == "__main__":
    main()
