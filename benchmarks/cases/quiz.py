"""The quiz_responses targets (1–7), each against the database's own limits, in one run.

    python benchmarks/run_all.py --only quiz [--size full|quick|smoke]

One PostgreSQL server is started here (fsync on, as production). Templates are built once with
generate_series; every contender gets a fresh copy (`CREATE DATABASE … TEMPLATE`) of the same
data on the same server, so that the machine's speed cancels out of each ratio:

  1 delete + audit        engine (archive off) rows/s ÷ a bare `DELETE … WHERE created_at < cutoff`
  2 archive + delete      engine (archive on, to a local folder) rows/s ÷ `COPY (SELECT … expired)
                          TO STDOUT` into a sink that discards, then the bare DELETE (times added)
  3 vs ORM loop           engine rows/s (1) ÷ a SQLAlchemy ORM row-by-row loop's (delete, audit
                          row, commit per row) on a slice of the expired rows
  4 batch p99 / max       every batch transaction's time in the engine runs of 1 and 2 (the worse)
  5 concurrent writer     single-row INSERT + commit in a loop, alone and while the engine runs:
                          throughput during ÷ alone, p99 latency during ÷ alone
  6 memory                peak RSS of the engine process (archive on): 10× the rows ÷ 1×
  7 work-proportional     engine seconds for the same expired rows in a 10× larger table ÷ 1×
  scattered (reported)    1 and 2 again with the rows in random physical order

The data: quiz_responses rows with ≈1.5 KB JSON answers, in time order (as an append-only table
is). The oldest rows are three bands 44, 42 and 40 h old (target 7's expired rows, one band per
run with a retention of 43, 41 and 39 h), the next ones up to 30 h old (expired at the policy's
24 h), the rest 20 h old or younger: hours between the groups, so that no row becomes due while
the benchmark runs and every contender acts on exactly the same rows.
"""

from __future__ import annotations

import json
import math
import os
import resource
import select
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1]
ROOT = BENCH.parent
for _path in (str(ROOT), str(BENCH)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from harness import Result  # noqa: E402

SERVER_SETTINGS = {  # durable, as production: every commit is flushed
    "fsync": "on", "synchronous_commit": "on", "full_page_writes": "on",
    "shared_buffers": "512MB", "max_wal_size": "8GB", "checkpoint_timeout": "30min",
}
CUTOFF = "now() - interval '24 hours'"  # the policy's retain_for of quiz_responses
# Target 7's data: BANDS bands of rows, 44, 42 and 40 hours old; run k (retain_for 43, 41, 39 h)
# deletes band k only, so that the same table gives three runs (the median is kept).
BANDS = 3
BAND_HOURS = (44, 42, 40)


@dataclass(frozen=True)
class Size:
    rows: int  # the main template: rows …
    expired: int  # … of which expired at 24 h
    small_rows: int  # the small template (targets 6 and 7)
    small_expired: int
    band: int  # the oldest rows of both templates, BANDS times: what each run of target 7 deletes
    scattered_rows: int  # the scattered template (half expired)
    orm_rows: int  # the ORM loop's slice
    writer_seconds: float  # the writer alone


SIZES = {
    "full": Size(2_000_000, 1_000_000, 200_000, 100_000, 10_000, 2_000_000, 5_000, 10.0),
    "quick": Size(200_000, 100_000, 20_000, 10_000, 1_000, 200_000, 500, 3.0),
    "smoke": Size(10_000, 5_000, 2_000, 1_000, 200, 4_000, 50, 1.0),
}

_started = time.monotonic()


def say(message: str) -> None:
    print(f"  [quiz {time.monotonic() - _started:6.1f}s] {message}", flush=True)


# the data ------------------------------------------------------------------------------------------
def _rows_sql(rows: int, expired: int, band: int, scattered: bool) -> str:
    # Row i (1 = oldest) is 1 ms after row i-1 within its group; hours between the groups. The
    # BANDS bands of `band` rows are 44, 42 and 40 hours old: target 7's runs, one band each.
    bands = BANDS * band
    return f"""
        INSERT INTO quiz_responses (id, session_id, email, answers, created_at)
        SELECT gen_random_uuid(), gen_random_uuid(), 'bench-' || i || '@example.invalid',
               jsonb_build_object('weight_kg', mod(i, 100), 'goal', 'lose', 'notes', repeat(md5(i::text), 45)),
               CASE WHEN i <= {bands}
                    THEN now() - make_interval(hours => {BAND_HOURS[0]} - 2 * ((i - 1) / {max(band, 1)}))
                         - make_interval(secs => ({band} * ((i - 1) / {max(band, 1)} + 1) - i) / 1000.0)
                    WHEN i <= {expired}
                    THEN now() - interval '30 hours' - make_interval(secs => ({expired} - i) / 1000.0)
                    ELSE now() - interval '20 hours' + make_interval(secs => (i - {expired}) / 1000.0) END
        FROM generate_series(1, {rows}) AS i
        {"ORDER BY random()" if scattered else ""}
    """


def _admin(server, sql: str, database: str = "postgres") -> None:
    import psycopg2

    connection = psycopg2.connect(server.dsn(database))
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            for statement in [sql] if isinstance(sql, str) else sql:
                cursor.execute(statement)
    finally:
        connection.close()


def build_template(server, name: str, rows: int, expired: int, band: int, scattered: bool = False) -> float:
    import sqlalchemy as sa

    started = time.perf_counter()
    engine = sa.create_engine(server.create_app_database(name))
    with engine.begin() as connection:
        connection.exec_driver_sql(_rows_sql(rows, expired, band, scattered))
    engine.dispose()
    _admin(server, ["VACUUM ANALYZE", "CHECKPOINT"], name)
    _admin(server, f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')  # none left open for the copies
    return time.perf_counter() - started


class Copies:
    """Fresh databases from the templates, each dropped after use (the data is GBs)."""

    def __init__(self, server):
        import psycopg2

        self.server = server
        connection = psycopg2.connect(server.dsn("postgres"))
        self.file_copy = connection.server_version >= 150000  # WAL_LOG (the default) writes it all to WAL
        connection.close()
        self.count = 0

    def fresh(self, template: str) -> str:
        self.count += 1
        name = f"bench_{template}_{self.count}"
        strategy = " STRATEGY FILE_COPY" if self.file_copy else ""
        _admin(self.server, [f'DROP DATABASE IF EXISTS "{name}"',
                             f'CREATE DATABASE "{name}" TEMPLATE "{template}"{strategy}', "CHECKPOINT"])
        _admin(self.server, ["VACUUM ANALYZE", "CHECKPOINT"], name)
        return name

    def drop(self, name: str) -> None:
        _admin(self.server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# the baselines -------------------------------------------------------------------------------------
def bare_delete(server, database: str) -> dict:
    import psycopg2

    connection = psycopg2.connect(server.dsn(database))
    try:
        with connection.cursor() as cursor:
            started = time.perf_counter()
            cursor.execute(f"DELETE FROM quiz_responses WHERE created_at < {CUTOFF}")
            deleted = cursor.rowcount
            connection.commit()
            seconds = time.perf_counter() - started
    finally:
        connection.close()
    return {"rows": deleted, "seconds": seconds, "rows_per_s": deleted / seconds}


class _Sink:
    """Where COPY … TO STDOUT goes: counted, then dropped."""

    def __init__(self):
        self.bytes = 0

    def write(self, data) -> int:
        self.bytes += len(data)
        return len(data)


def copy_then_delete(server, database: str) -> dict:
    import psycopg2

    connection = psycopg2.connect(server.dsn(database))
    sink = _Sink()
    try:
        with connection.cursor() as cursor:
            started = time.perf_counter()
            cursor.copy_expert(f"COPY (SELECT * FROM quiz_responses WHERE created_at < {CUTOFF}) TO STDOUT", sink)
            connection.commit()
            copy_seconds = time.perf_counter() - started
            started = time.perf_counter()
            cursor.execute(f"DELETE FROM quiz_responses WHERE created_at < {CUTOFF}")
            deleted = cursor.rowcount
            connection.commit()
            delete_seconds = time.perf_counter() - started
    finally:
        connection.close()
    seconds = copy_seconds + delete_seconds
    return {"rows": deleted, "seconds": seconds, "rows_per_s": deleted / seconds, "copy_seconds": copy_seconds,
            "delete_seconds": delete_seconds, "copy_bytes": sink.bytes}


def orm_loop(server, database: str, rows: int) -> dict:
    """What the retention job would be written as without this project: the ORM, one row at a time,
    an audit row each, a commit each."""
    import sqlalchemy as sa
    from sqlalchemy.dialects.postgresql import JSONB, UUID
    from sqlalchemy.orm import DeclarativeBase, Session, mapped_column

    class Base(DeclarativeBase):
        pass

    class QuizResponse(Base):
        __tablename__ = "quiz_responses"
        id = mapped_column(UUID(as_uuid=True), primary_key=True)
        session_id = mapped_column(UUID(as_uuid=True), nullable=False)
        email = mapped_column(sa.Text)
        answers = mapped_column(JSONB, nullable=False)
        created_at = mapped_column(sa.DateTime(timezone=True), nullable=False)

    class AuditEntry(Base):
        __tablename__ = "orm_audit_log"  # its own wide table, as such a job would have
        id = mapped_column(sa.BigInteger, primary_key=True, autoincrement=True)
        domain = mapped_column(sa.String(63), nullable=False)
        record_id = mapped_column(sa.Text, nullable=False)
        action = mapped_column(sa.String(32), nullable=False)
        run_id = mapped_column(sa.String(64), nullable=False)
        occurred_at = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())
        policy_version = mapped_column(sa.String(96), nullable=False)
        deadline = mapped_column(sa.DateTime(timezone=True))

    engine = sa.create_engine(server.url(database))
    try:
        Base.metadata.create_all(engine, tables=[AuditEntry.__table__])
        started = time.perf_counter()
        with Session(engine) as session:
            cutoff = sa.func.now() - sa.text("interval '24 hours'")
            expired = (session.query(QuizResponse).filter(QuizResponse.created_at < cutoff)
                       .order_by(QuizResponse.created_at).limit(rows).all())
            for row in expired:
                session.add(AuditEntry(domain="quiz_responses", record_id=str(row.id), action="deleted",
                                       run_id="orm-loop", policy_version="benchmark",
                                       deadline=row.created_at + timedelta(hours=24)))
                session.delete(row)
                session.commit()
        seconds = time.perf_counter() - started
    finally:
        engine.dispose()
    return {"rows": len(expired), "seconds": seconds, "rows_per_s": len(expired) / seconds}


# the engine, in a child process so that its peak RSS is its own ----------------------------------
def run_engine(url: str, archive: bool, retain_for: timedelta | None = None, subjects: bool = True) -> dict:
    spec = {"url": url, "archive": archive, "retain_seconds": retain_for.total_seconds() if retain_for else None,
            "subjects": subjects}
    result = subprocess.run([sys.executable, __file__, "engine", json.dumps(spec)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"engine run failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    report = json.loads(result.stdout.strip().splitlines()[-1])
    report["rows_per_s"] = report["rows"] / report["seconds"]
    return report


def engine_child(spec: dict) -> None:
    from retention_pipelines.engine import RetentionEngine
    from retention_pipelines.policies import load_policies
    from retention_pipelines.stores import AppDatabase, archive_store_from_url
    from retention_pipelines_tests.support.archives import configured_keys

    policies = load_policies()
    policy = policies.domains["quiz_responses"]
    archive = policy.archive.model_copy(update={"enabled": spec["archive"]}
                                        | ({"keep_for": timedelta(days=30)} if spec["archive"] else {}))
    update = {"archive": archive}
    if not spec.get("subjects", True):  # no subject column: one data key per batch, not per row
        update["subject_column"] = None
    if spec["retain_seconds"] is not None:
        update["retain_for"] = timedelta(seconds=spec["retain_seconds"])
    policy = policy.model_copy(update=update)
    with tempfile.TemporaryDirectory() as folder:
        database = AppDatabase(spec["url"])
        engine = RetentionEngine(policy, policies.policy_version, database,
                                 archive_store_from_url(Path(folder).as_uri()),
                                 keys=configured_keys(database) if policy.archive.enabled else None)
        run_started = time.monotonic()
        report = engine.run("benchmark")
        run_finished = time.monotonic()
        database.dispose()
    print(json.dumps({
        "rows": report.acted.acted_on, "found": report.found.rows, "seconds": run_finished - run_started,
        "batches": report.acted.batches, "batch_seconds": report.acted.batch_seconds,
        "paused_for_load_seconds": report.acted.paused_seconds,
        "longest_batch_ms": report.acted.longest_batch_seconds * 1000,
        "archive_seconds": report.archived.seconds, "act_seconds": report.acted.seconds,
        "audit_consistent": report.audited.consistent if report.audited else None,
        "batch_size": policy.batch_size, "parallel_batches": policy.parallel_batches,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "run_started": run_started, "run_finished": run_finished,
    }))


# the concurrent writer -----------------------------------------------------------------------------
class Writer:
    """A process doing single-row INSERT + commit in a loop until stopped; each commit's end time
    (monotonic, comparable across processes) and latency."""

    def __init__(self, dsn: str):
        self.process = subprocess.Popen([sys.executable, __file__, "writer", dsn], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ready, _, _ = select.select([self.process.stdout], [], [], 60)
        line = self.process.stdout.readline() if ready else ""
        if line.strip() != "ready":
            self.process.kill()
            raise RuntimeError(f"the writer did not start: {line}{self.process.stderr.read()[-2000:]}")

    def stop(self) -> list[tuple[float, float]]:
        output, errors = self.process.communicate("stop\n", timeout=120)
        if self.process.returncode != 0:
            raise RuntimeError(f"the writer failed:\n{errors[-2000:]}")
        return json.loads(output.strip().splitlines()[-1])


def writer_child(dsn: str) -> None:
    import psycopg2

    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    answers = json.dumps({"weight_kg": 80, "goal": "lose", "notes": "x" * 1440})
    connection = psycopg2.connect(dsn)
    samples, count = [], 0
    with connection.cursor() as cursor:
        while not stop.is_set():
            started = time.monotonic()
            cursor.execute("INSERT INTO quiz_responses (id, session_id, email, answers, created_at) VALUES "
                           "(gen_random_uuid(), gen_random_uuid(), %s, %s::jsonb, now())",
                           (f"writer-{count}@example.invalid", answers))
            connection.commit()
            finished = time.monotonic()
            samples.append((finished, finished - started))
            count += 1
            if count == 20:  # warmed up: connection, plan, caches
                print("ready", flush=True)
    connection.close()
    print(json.dumps(samples))


def writer_figures(samples: list, start: float, end: float) -> dict:
    inside = sorted(latency for finished, latency in samples if start <= finished <= end)
    return {"commits": len(inside), "seconds": end - start, "commits_per_s": len(inside) / (end - start),
            "p50_ms": percentile(inside, 50) * 1000, "p99_ms": percentile(inside, 99) * 1000,
            "max_ms": (inside[-1] if inside else math.nan) * 1000}


def percentile(values: list[float], p: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


# the run -------------------------------------------------------------------------------------------
NAMES = {  # case → (measure, compare, target, unit): every result this module reports
    "1 delete + audit": ("engine rows/s ÷ bare DELETE's", "≥", 0.5, "×"),
    "2 archive + delete + audit": ("engine rows/s ÷ COPY TO + DELETE's", "≥", 0.5, "×"),
    "2 without subjects": ("as 2, no subject column: one data key per batch", "≥", 0.5, "×"),
    "3 vs ORM loop": ("engine rows/s ÷ ORM row-by-row loop's", "≥", 40.0, "×"),
    "4 batch p99": ("p99 of batch transactions (worse of 1, 2)", "≤", 300.0, "ms"),
    "4 batch max": ("longest batch transaction (worse of 1, 2)", "≤", 1000.0, "ms"),
    "5 concurrent writer throughput": ("writer commits/s during engine run ÷ alone", "≥", 0.70, "×"),
    "5 concurrent writer p99": ("writer p99 latency during engine run ÷ alone", "≤", 3.0, "×"),
    "6 memory": ("peak RSS, 10× rows ÷ 1× (archive on)", "≤", 1.2, "×"),
    "7 work-proportional": ("engine seconds, same expired rows, 10× table ÷ 1×", "≤", 1.5, "×"),
    "scattered: delete + audit": ("as 1, rows in random physical order", "≥", 0.5, "×"),
    "scattered: archive + delete + audit": ("as 2, rows in random physical order", "≥", 0.5, "×"),
}
REPORTED_ONLY = {"2 without subjects", "scattered: delete + audit", "scattered: archive + delete + audit"}


def _result(case: str, value: float, details: dict) -> Result:
    measure, compare, target, unit = NAMES[case]
    return Result(case, measure, value, compare, target, unit, details, reported_only=case in REPORTED_ONLY)


def run(size: str = "full") -> list[Result]:
    from retention_pipelines_tests.support.servers import PostgresServer

    global _started
    _started = time.monotonic()
    s = SIZES[size]
    home = tempfile.TemporaryDirectory(prefix="retention-bench-home-")
    previous_home = os.environ.get("RETENTION_HOME")
    os.environ["RETENTION_HOME"] = home.name  # the engine's fallback keys: none in the repository
    m: dict[str, dict] = {}  # what was measured, by phase
    errors: dict[str, str] = {}  # what failed, by phase
    server = PostgresServer(SERVER_SETTINGS)
    try:
        server.start()
        say(f"PostgreSQL on port {server.port} (fsync on); size {size}: {s}")
        copies = Copies(server)

        def phase(key: str, what: str, action):
            say(what)
            started = time.monotonic()
            try:
                m[key] = action()
            except Exception as exc:  # one phase failing fails its targets, never the others
                errors[key] = f"{type(exc).__name__}: {exc}"
                say(f"  FAILED: {errors[key][:500]}")
                return
            say(f"  ({time.monotonic() - started:.1f}s with its copy) "
                + ", ".join(f"{k} {_short(v)}" for k, v in m[key].items() if k not in _QUIET))

        def on_copy(template: str, action):
            def go():
                name = copies.fresh(template)
                try:
                    return action(name)
                finally:
                    copies.drop(name)
            return go

        phase("build", f"building templates: main {s.rows:,} rows ({s.expired:,} expired), "
              f"small {s.small_rows:,} ({s.small_expired:,}), time-ordered",
              lambda: {"main_seconds": build_template(server, "quiz_main", s.rows, s.expired, s.band),
                       "small_seconds": build_template(server, "quiz_small", s.small_rows, s.small_expired,
                                                       s.band)})
        phase("t1_base", "1: bare DELETE of the expired rows",
              on_copy("quiz_main", lambda db: bare_delete(server, db)))
        phase("t1_engine", "1: engine run, delete + audit (archive off)",
              on_copy("quiz_main", lambda db: run_engine(server.url(db), archive=False)))
        phase("t2_base", "2: COPY (expired) TO STDOUT into a sink, then bare DELETE",
              on_copy("quiz_main", lambda db: copy_then_delete(server, db)))
        phase("t2_engine", "2: engine run, archive (local folder) + delete + audit",
              on_copy("quiz_main", lambda db: run_engine(server.url(db), archive=True)))
        phase("t2_batch_keys", "2 (reported): the same without a subject column: one data key per batch",
              on_copy("quiz_main", lambda db: run_engine(server.url(db), archive=True, subjects=False)))
        phase("t3_orm", f"3: ORM row-by-row loop over {s.orm_rows:,} expired rows",
              on_copy("quiz_main", lambda db: orm_loop(server, db, s.orm_rows)))
        phase("t5_idle", f"5: the writer alone for {s.writer_seconds:.0f}s",
              on_copy("quiz_main", lambda db: writer_alone(server, db, s.writer_seconds)))
        phase("t5_during", "5: the writer while the engine deletes (archive off)",
              on_copy("quiz_main", lambda db: writer_during_engine(server, db)))
        phase("t6_small", f"6: engine run with archive on, {s.small_expired:,} expired rows",
              on_copy("quiz_small", lambda db: run_engine(server.url(db), archive=True)))
        phase("t7_large", f"7: {BANDS} engine runs, {s.band:,} expired rows each, in a {s.rows:,}-row table",
              on_copy("quiz_main", lambda db: band_runs(server, db)))
        phase("t7_small", f"7: {BANDS} engine runs, {s.band:,} expired rows each, in a {s.small_rows:,}-row table",
              on_copy("quiz_small", lambda db: band_runs(server, db)))
        _admin(server, ['DROP DATABASE IF EXISTS "quiz_main"', 'DROP DATABASE IF EXISTS "quiz_small"'])
        phase("scattered_build", f"scattered: building a template of {s.scattered_rows:,} rows "
              f"({s.scattered_rows // 2:,} expired) in random physical order",
              lambda: {"seconds": build_template(server, "quiz_scattered", s.scattered_rows, s.scattered_rows // 2,
                                                 0, scattered=True)})
        phase("s1_base", "scattered: bare DELETE",
              on_copy("quiz_scattered", lambda db: bare_delete(server, db)))
        phase("s1_engine", "scattered: engine run, delete + audit",
              on_copy("quiz_scattered", lambda db: run_engine(server.url(db), archive=False)))
        phase("s2_base", "scattered: COPY TO STDOUT, then bare DELETE",
              on_copy("quiz_scattered", lambda db: copy_then_delete(server, db)))
        phase("s2_engine", "scattered: engine run, archive + delete + audit",
              on_copy("quiz_scattered", lambda db: run_engine(server.url(db), archive=True)))
    finally:
        server.stop()
        if previous_home is None:
            os.environ.pop("RETENTION_HOME", None)
        else:
            os.environ["RETENTION_HOME"] = previous_home
        home.cleanup()
    say(f"done: {copies.count} database copies")
    return results(m, errors, s)


_QUIET = {"batch_seconds", "run_started", "run_finished"}


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def band_runs(server, database: str) -> dict:
    """Target 7: one engine run per band (a VACUUM between them), the median of their seconds."""
    runs = []
    for hours in BAND_HOURS:
        runs.append(run_engine(server.url(database), archive=False, retain_for=timedelta(hours=hours - 1)))
        _admin(server, "VACUUM ANALYZE quiz_responses", database)
    seconds = [r["seconds"] for r in runs]
    return {"rows": [r["rows"] for r in runs], "seconds": percentile(seconds, 50), "runs_seconds": seconds}


def writer_alone(server, database: str, seconds: float) -> dict:
    writer = Writer(server.dsn(database))
    start = time.monotonic()
    time.sleep(seconds)
    end = time.monotonic()
    return writer_figures(writer.stop(), start, end)


def writer_during_engine(server, database: str) -> dict:
    writer = Writer(server.dsn(database))
    try:
        engine = run_engine(server.url(database), archive=False)
    finally:
        samples = writer.stop()
    figures = writer_figures(samples, engine["run_started"], engine["run_finished"])
    return {**figures, "engine_rows": engine["rows"], "engine_seconds": engine["seconds"],
            "engine_rows_per_s": engine["rows_per_s"]}


def results(m: dict, errors: dict, s: Size) -> list[Result]:
    """Each target from what was measured; a target whose phases failed has no value (it fails)."""
    out = []

    def need(case: str, keys: list[str], compute) -> None:
        missing = [k for k in keys if k not in m]
        if missing:
            why = "; ".join(f"{k}: {errors.get(k, errors.get('build', 'not measured'))}" for k in missing)
            out.append(_result(case, math.nan, {"error": why}))
            return
        try:
            value, details = compute()
        except Exception as exc:
            value, details = math.nan, {"error": f"{type(exc).__name__}: {exc}"}
        out.append(_result(case, value, details))

    def engine_details(run: dict) -> dict:
        return {k: v for k, v in run.items() if k not in _QUIET}

    def ratio(base_key: str, engine_key: str):
        base, engine = m[base_key], m[engine_key]
        details = {"engine": engine_details(engine), "baseline": base, "rows": engine["rows"]}
        if engine["rows"] != base["rows"]:
            details["warning"] = f"engine acted on {engine['rows']} rows, the baseline on {base['rows']}"
        return engine["rows_per_s"] / base["rows_per_s"], details

    def batches(stat):
        runs = {k: m[k]["batch_seconds"] for k in ("t1_engine", "t2_engine")}
        figures = {k: stat(v) * 1000 for k, v in runs.items()}
        worst = max(figures, key=figures.get)
        return figures[worst], {"worst_of": worst, **{f"{k}_ms": v for k, v in figures.items()},
                                **{f"{k}_batches": len(v) for k, v in runs.items()}}

    need("1 delete + audit", ["t1_base", "t1_engine"], lambda: ratio("t1_base", "t1_engine"))

    def t2():
        value, details = ratio("t2_base", "t2_engine")
        details["archive_seconds"] = m["t2_engine"]["archive_seconds"]
        details["act_seconds"] = m["t2_engine"]["act_seconds"]
        return value, details

    need("2 archive + delete + audit", ["t2_base", "t2_engine"], t2)
    need("2 without subjects", ["t2_base", "t2_batch_keys"], lambda: ratio("t2_base", "t2_batch_keys"))
    need("3 vs ORM loop", ["t1_engine", "t3_orm"],
         lambda: (m["t1_engine"]["rows_per_s"] / m["t3_orm"]["rows_per_s"],
                  {"engine_rows_per_s": m["t1_engine"]["rows_per_s"], "orm": m["t3_orm"]}))
    need("4 batch p99", ["t1_engine", "t2_engine"], lambda: batches(lambda v: percentile(v, 99)))
    need("4 batch max", ["t1_engine", "t2_engine"], lambda: batches(lambda v: max(v)))
    need("5 concurrent writer throughput", ["t5_idle", "t5_during"],
         lambda: (m["t5_during"]["commits_per_s"] / m["t5_idle"]["commits_per_s"],
                  {"alone": m["t5_idle"], "during": m["t5_during"]}))
    need("5 concurrent writer p99", ["t5_idle", "t5_during"],
         lambda: (m["t5_during"]["p99_ms"] / m["t5_idle"]["p99_ms"], {"alone": m["t5_idle"], "during": m["t5_during"]}))
    need("6 memory", ["t2_engine", "t6_small"],
         lambda: (m["t2_engine"]["peak_rss_mb"] / m["t6_small"]["peak_rss_mb"],
                  {"large_rows": m["t2_engine"]["rows"], "large_peak_rss_mb": m["t2_engine"]["peak_rss_mb"],
                   "small_rows": m["t6_small"]["rows"], "small_peak_rss_mb": m["t6_small"]["peak_rss_mb"]}))
    need("7 work-proportional", ["t7_large", "t7_small"],
         lambda: (m["t7_large"]["seconds"] / m["t7_small"]["seconds"],
                  {"large_table_rows": s.rows, "small_table_rows": s.small_rows,
                   "large": m["t7_large"], "small": m["t7_small"]}))
    need("scattered: delete + audit", ["s1_base", "s1_engine"], lambda: ratio("s1_base", "s1_engine"))
    need("scattered: archive + delete + audit", ["s2_base", "s2_engine"], lambda: ratio("s2_base", "s2_engine"))
    return out


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "engine":
        engine_child(json.loads(sys.argv[2]))
    elif len(sys.argv) == 3 and sys.argv[1] == "writer":
        writer_child(sys.argv[2])
    else:
        raise SystemExit("run through benchmarks/run_all.py --only quiz (this file's own arguments are its "
                         "child processes': engine SPEC | writer DSN)")
