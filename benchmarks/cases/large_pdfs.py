"""Case 11: the memory of a run copying large PDFs — a batch of ten 200 MB PDFs against ten of 1 MB.

    python benchmarks/cases/large_pdfs.py [--size full|quick|smoke]

Each batch is ten expired meal plans whose PDFs are in the hot bucket of moto's S3 server (made and
uploaded a chunk at a time, by this process, before the run). A fresh process then runs the
meal_plans retention over them on PostgreSQL — each PDF read, encrypted and written to the archive
bucket a chunk at a time (a multipart upload for a large one), verified, deleted, its row redacted
and audited — with the default budget of bytes in flight, and reports its own peak RSS
(getrusage). Both batches run in the same process setup, one after the other, on the same servers.

The target: peak RSS with the large PDFs ÷ with the 1 MB ones ≤ 1.5. full: 10 × 200 MB against
10 × 1 MB; quick: 10 × 50 MB; smoke: 10 × 9 MB (two parts each).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import boto3  # noqa: E402

from benchmarks.harness import Result, run_alone  # noqa: E402
from retention_pipelines.stores import AppDatabase  # noqa: E402
from retention_pipelines_tests.support.app_rows import insert_meal_plans_at, meal_plan_rows  # noqa: E402
from retention_pipelines_tests.support.hot_bucket import hot_keys, put_large_pdf  # noqa: E402
from retention_pipelines_tests.support.servers import MotoS3Server, PostgresServer  # noqa: E402

CASE = "11 large PDFs' memory"
MIB = 1024 * 1024
LARGE = {"full": 200 * MIB, "quick": 50 * MIB, "smoke": 9 * MIB}
SMALL = 1 * MIB
PDFS = 10
TARGET = 1.5


def child(config: dict) -> dict:
    """The run, in this (fresh) process: its figures, peak RSS included."""
    from retention_pipelines.engine import RetentionEngine
    from retention_pipelines.policies import load_policies
    from retention_pipelines.stores.archive import S3ArchiveStore
    from retention_pipelines.stores.blob import S3BlobStore
    from retention_pipelines_tests.support.archives import configured_keys

    database = AppDatabase(config["database_url"])
    policies = load_policies()
    engine = RetentionEngine(policies.domains["meal_plans"], policies.policy_version, database,
                             S3ArchiveStore(config["archive_bucket"], "retention"),
                             blob_store=S3BlobStore(config["hot_bucket"], ""), keys=configured_keys(database))
    started = time.perf_counter()
    report = engine.run(config["run_id"])
    seconds = time.perf_counter() - started
    database.dispose()
    return {"acted_on": report.acted.acted_on, "failed": report.acted.failed, "seconds": seconds,
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def batch(postgres: PostgresServer, size: int, label: str) -> dict:
    """Ten expired plans with PDFs of `size` bytes, run over by a process of its own; its figures."""
    s3 = boto3.client("s3")
    hot, archive = f"hot-{uuid.uuid4().hex[:8]}", f"archive-{uuid.uuid4().hex[:8]}"
    for bucket in (hot, archive):
        s3.create_bucket(Bucket=bucket)
    keys = [f"plans/{label}-{i}.pdf" for i in range(PDFS)]
    for index, key in enumerate(keys):
        put_large_pdf(hot, key, size, seed=index)
    url = postgres.create_app_database(f"bench_large_pdfs_{label}")
    database = AppDatabase(url)
    try:
        now = database.now()
        insert_meal_plans_at(database, [now - timedelta(days=91, seconds=i) for i in range(PDFS)], keys)
        config = {"database_url": url, "hot_bucket": hot, "archive_bucket": archive, "run_id": f"bench-{label}"}
        done = subprocess.run([sys.executable, __file__, "--child", json.dumps(config)], capture_output=True,
                              text=True, timeout=3600, cwd=ROOT)
        if done.returncode != 0:
            raise RuntimeError(f"the run over {label} PDFs failed: {done.stderr[-2000:]}")
        figures = json.loads(done.stdout.strip().splitlines()[-1])
        # A run that left work undone would measure nothing: every PDF gone, every row redacted.
        unredacted = sum(1 for key, deleted in meal_plan_rows(database).values() if key is not None or deleted is None)
        if figures["acted_on"] != PDFS or figures["failed"] or hot_keys(hot) or unredacted:
            raise RuntimeError(f"the run over {label} PDFs did not finish: {figures}, {len(hot_keys(hot))} PDFs "
                               f"left, {unredacted} rows not redacted")
    finally:
        database.dispose()
    return figures


def measure(large: int) -> list[Result]:
    postgres = PostgresServer().start()
    try:
        moto = MotoS3Server().start()
        try:
            with tempfile.TemporaryDirectory(prefix="bench-large-pdfs-") as home, mock.patch.dict(os.environ, {
                    "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                    "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": moto.endpoint,
                    "RETENTION_HOME": home, "RETENTION_ENV": "demo"}):
                small = batch(postgres, SMALL, "small")
                big = batch(postgres, large, "large")
        finally:
            moto.stop()
    finally:
        postgres.stop()
    ratio = big["peak_rss_bytes"] / small["peak_rss_bytes"]
    details = {
        "pdfs_per_batch": PDFS, "small_pdf_bytes": SMALL, "large_pdf_bytes": large,
        "small_peak_rss_mib": round(small["peak_rss_bytes"] / MIB, 1),
        "large_peak_rss_mib": round(big["peak_rss_bytes"] / MIB, 1),
        "small_seconds": round(small["seconds"], 2), "large_seconds": round(big["seconds"], 2),
        "large_mib_per_s": round(PDFS * large / MIB / big["seconds"], 1),
    }
    return [Result(CASE, f"peak RSS, {PDFS} × {large // MIB} MB PDFs ÷ {PDFS} × {SMALL // MIB} MB", ratio, "≤",
                   TARGET, details=details)]


def run(size: str) -> list[Result]:
    """The case at one of the harness's sizes: full (200 MB PDFs), quick (50 MB), smoke (9 MB)."""
    return measure(LARGE[size])


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(json.dumps(child(json.loads(sys.argv[2]))))
    else:
        run_alone(__doc__.splitlines()[0], run, LARGE)
