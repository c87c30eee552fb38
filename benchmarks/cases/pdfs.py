"""Case 9: meal_plans' PDFs on an S3 API (moto's server) — archived, deleted, redacted.

    python benchmarks/cases/pdfs.py [--size full|quick|smoke] [--objects N]

N expired meal plans (full 10,000; quick 1,000; smoke 50), each with a ≈20 KB PDF in the hot
bucket. In the same run, on the same servers:

  baseline  the same S3 work one object at a time, as a naive script would do it: for each
            object in turn GET it from the hot bucket, PUT it to the archive bucket, DELETE it
            from the hot bucket (one DeleteObject per object, no bulk delete)
  engine    the meal_plans retention run: each PDF archived (encrypted) and verified, deleted
            from the hot bucket, its row redacted and audited on PostgreSQL
  ceiling   (a detail, not the target) the fewest S3 calls the work needs, GET and PUT per object
            on 16 threads and DeleteObjects per 1,000, with no engine: the most the S3 server
            itself allows; moto is one Python process, which on a 2-core machine caps the ratio
            well below 5 whatever the engine does

The target is the engine's objects/s ÷ the baseline's ≥ 5. The details hold the three rates, the
share of the engine's wall time spent in S3 calls (summed over its threads) and its longest batch.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import boto3  # noqa: E402

from benchmarks.harness import Result, print_results  # noqa: E402
from retention_pipelines.engine import RetentionEngine  # noqa: E402
from retention_pipelines.policies import load_policies  # noqa: E402
from retention_pipelines.stores import AppDatabase  # noqa: E402
from retention_pipelines.stores.archive import S3ArchiveStore  # noqa: E402
from retention_pipelines.stores.blob import S3BlobStore  # noqa: E402
from retention_pipelines.stores.s3 import s3_client  # noqa: E402
from retention_pipelines_tests.support.app_rows import insert_meal_plans_at, meal_plan_rows  # noqa: E402
from retention_pipelines_tests.support.archives import configured_keys  # noqa: E402
from retention_pipelines_tests.support.servers import MotoS3Server, PostgresServer  # noqa: E402

CASE = "9 meal-plan PDFs on S3"
OBJECTS = {"full": 10_000, "quick": 1_000, "smoke": 50}
TARGET = 5.0  # the engine at least five times the one-object-at-a-time rate
CEILING_THREADS = 16
PDF = b"%PDF-1.4\n" + b"x" * 20_000 + b"\n%%EOF\n"  # a small plan, ≈20 KB


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
    """The hot bucket as the app leaves it: one PDF per key (written in parallel: not measured)."""
    client = boto3.client("s3")
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda key: client.put_object(Bucket=bucket, Key=key, Body=PDF), keys))


def one_at_a_time(hot: str, archive: str, keys: list[str]) -> float:
    """The baseline: GET, PUT, DELETE for each object in sequence; its wall time in seconds."""
    client = boto3.client("s3")
    started = time.perf_counter()
    for key in keys:
        data = client.get_object(Bucket=hot, Key=key)["Body"].read()
        client.put_object(Bucket=archive, Key=f"one-at-a-time/{key}", Body=data)
        client.delete_object(Bucket=hot, Key=key)
    return time.perf_counter() - started


def raw_parallel(hot: str, archive: str, keys: list[str], threads: int = CEILING_THREADS) -> float:
    """The ceiling: the fewest S3 calls the work needs (GET and PUT per object, on `threads`
    threads; DeleteObjects per 1,000 keys) with no engine around them; its wall time in seconds.
    It shows what the S3 server itself allows (moto is one Python process: on a 2-core machine
    it, not the engine, bounds the ratio)."""
    client = s3_client()

    def copy(key: str) -> None:
        data = client.get_object(Bucket=hot, Key=key)["Body"].read()
        client.put_object(Bucket=archive, Key=f"ceiling/{key}", Body=data)

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(copy, keys))
    for start in range(0, len(keys), 1000):
        client.delete_objects(Bucket=hot, Delete={"Objects": [{"Key": key} for key in keys[start:start + 1000]],
                                                  "Quiet": True})
    return time.perf_counter() - started


def count_objects(bucket: str, prefix: str) -> int:
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sum(page.get("KeyCount", 0) for page in pages)


def engine_run(database: AppDatabase, hot: str, archive: str, objects: int) -> dict:
    """The meal_plans retention run over `objects` expired plans; checks it did all of the work."""
    keys = [f"plans/{i}.pdf" for i in range(objects)]
    fill(hot, keys)
    now = database.now()
    insert_meal_plans_at(database, [now - timedelta(days=91, seconds=i) for i in range(objects)], keys)

    # The stores' own client (its connection pool sized as in production), timed.
    clock = {"seconds": 0.0, "calls": 0}
    policies = load_policies()
    engine = RetentionEngine(
        policies.domains["meal_plans"], policies.policy_version, database,
        S3ArchiveStore(archive, "retention", client=TimedClient(s3_client(), clock)),
        blob_store=S3BlobStore(hot, "", client=TimedClient(s3_client(), clock)), keys=configured_keys(database))
    started = time.perf_counter()
    report = engine.run("bench-pdfs")
    seconds = time.perf_counter() - started

    # A fast run that left work undone would be a false pass: every PDF gone from the hot bucket,
    # one archived copy each, every row redacted.
    left_hot, archived = count_objects(hot, "plans/"), count_objects(archive, "retention/meal_plans/blobs/")
    unredacted = sum(1 for key, deleted in meal_plan_rows(database).values() if key is not None or deleted is None)
    if report.acted.acted_on != objects or report.acted.failed or left_hot or archived != objects or unredacted:
        raise RuntimeError(f"the engine did not finish the work: {report.acted.acted_on} of {objects} acted on, "
                           f"{report.acted.failed} failed, {left_hot} PDFs left in the hot bucket, {archived} "
                           f"archived, {unredacted} rows not redacted")
    return {"seconds": seconds, "s3_calls": clock["calls"], "s3_seconds": clock["seconds"],
            "batches": report.acted.batches, "longest_batch_ms": report.acted.longest_batch_seconds * 1000}


def measure(objects: int) -> list[Result]:
    postgres = PostgresServer().start()
    try:
        moto = MotoS3Server().start()
        try:
            with tempfile.TemporaryDirectory(prefix="bench-pdfs-") as home, mock.patch.dict(os.environ, {
                    # boto3 finds moto through AWS_ENDPOINT_URL, as production finds S3; the archive's
                    # master key is made in a folder of this run, never the repository's .retention.
                    "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                    "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": moto.endpoint,
                    "RETENTION_HOME": home}):
                s3 = boto3.client("s3")
                hot, archive = f"hot-{uuid.uuid4().hex[:8]}", f"archive-{uuid.uuid4().hex[:8]}"
                for bucket in (hot, archive):
                    s3.create_bucket(Bucket=bucket)

                baseline_keys = [f"baseline-plans/{i}.pdf" for i in range(objects)]
                fill(hot, baseline_keys)
                baseline_seconds = one_at_a_time(hot, archive, baseline_keys)
                ceiling_keys = [f"ceiling-plans/{i}.pdf" for i in range(objects)]
                fill(hot, ceiling_keys)
                ceiling_seconds = raw_parallel(hot, archive, ceiling_keys)

                database = AppDatabase(postgres.create_app_database("bench_pdfs"))
                try:
                    run = engine_run(database, hot, archive, objects)
                finally:
                    database.dispose()
        finally:
            moto.stop()
    finally:
        postgres.stop()

    baseline_rate, rate, ceiling_rate = objects / baseline_seconds, objects / run["seconds"], objects / ceiling_seconds
    details = {
        "objects": objects, "pdf_bytes": len(PDF),
        "baseline": "GET + PUT + DELETE per object, one object after another",
        "baseline_seconds": round(baseline_seconds, 2), "baseline_objects_per_s": round(baseline_rate, 1),
        "ceiling": f"GET + PUT per object on {CEILING_THREADS} threads, DeleteObjects per 1,000: what the S3 server "
                   "allows this work, engine or not",
        "ceiling_objects_per_s": round(ceiling_rate, 1), "ceiling_ratio": round(ceiling_rate / baseline_rate, 2),
        "engine_seconds": round(run["seconds"], 2), "engine_objects_per_s": round(rate, 1),
        "engine_s3_calls": run["s3_calls"], "engine_s3_seconds_all_threads": round(run["s3_seconds"], 2),
        "engine_s3_share_of_wall_time": round(run["s3_seconds"] / run["seconds"], 2),
        "batches": run["batches"], "longest_batch_ms": round(run["longest_batch_ms"], 1),
    }
    return [Result(CASE, "objects/s ÷ one-object-at-a-time GET+PUT+DELETE", rate / baseline_rate, "≥", TARGET,
                   details=details)]


def run(size: str) -> list[Result]:
    """The case at one of the harness's sizes: full (the issue's 10,000 PDFs), quick, smoke."""
    return measure(OBJECTS[size])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(OBJECTS), default="full")
    parser.add_argument("--objects", type=int, help="any number of PDFs instead of the size's")
    args = parser.parse_args()
    print_results(measure(args.objects) if args.objects else run(args.size))


if __name__ == "__main__":
    main()
