"""Audit tampering. A sealed audit log is tampered with directly in SQL in 100
seeded random ways — an UPDATE of a random column of a random sealed row, a DELETE of a random row,
a forged INSERT with an id in the middle of a domain's sealed range — each on a fresh copy of one
template database (CREATE DATABASE … TEMPLATE). The verifier (engine/audit/verify.py, what
`retention audit verify` runs) must catch every one and name the first broken link: the tampered
domain and the audit-row id (and, for a changed or deleted row, its chain position).

Through the real console script and through Dagster's `audit_chain_intact` check, `make
reliability` (RELIABILITY_FULL=1) runs every case; CI, inside `make test`, a sample (every 10th and
every 20th case): a subprocess costs about a second and a materialization two, where the function
costs a few milliseconds, and the function is the same code both of them call.
"""

from __future__ import annotations

import os
import random
import subprocess
from datetime import UTC, datetime, timedelta

import dagster as dg
import psycopg2
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from retention_pipelines import schema
from retention_pipelines.dagster_wiring.audit_chain import INTACT_CHECK, build_audit_chain_defs
from retention_pipelines.dagster_wiring.resources import RetentionStores
from retention_pipelines.engine.audit.links import CONTENT_COLUMNS
from retention_pipelines.engine.audit.seal import seal
from retention_pipelines.engine.audit.verify import verify
from retention_pipelines.stores import AppDatabase
from retention_pipelines_tests.support.cli import RETENTION_SCRIPT
from retention_pipelines_tests.support.databases import new_database
from retention_pipelines_tests.support.figures import full, record

TAMPERINGS = 100
SEED = 9
DOMAINS = ("quiz_responses", "magic_link_tokens", "meal_plans", "email_blacklist")
ROWS = 400
BLOCK_ROWS = 25  # several blocks per domain, so that tamperings land on block boundaries too
log = schema.audit_log


def seed_audit_log(database: AppDatabase) -> None:
    """ROWS audit rows, the domains in random turns, with the columns a run or a person fills; every
    7th row removed before sealing, so that the sealed id ranges have gaps a forger could fill."""
    rng = random.Random(SEED)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    rows = []
    for n in range(ROWS):
        by_person = n % 11 == 0
        rows.append({
            "domain": rng.choice(DOMAINS), "record_id": f"rec-{n}",
            "action": "queue_resolved" if by_person else rng.choice(["deleted", "redacted", "erased"]),
            "run_id": f"run-{n // 20}", "occurred_at": start + timedelta(seconds=n, microseconds=n),
            "policy_version": "2026-11-30.2+abcdef012345",
            "archive_uri": f"s3://archive/batch-{n // 50}.jsonl" if n % 3 == 0 else None,
            "deadline": None if by_person else start - timedelta(days=n % 90),
            "actor": "ops-lead" if by_person else None, "detail": "open → resolved" if by_person else None})
    with database.begin() as connection:
        ids = list(connection.execute(sa.insert(log).returning(log.c.id), rows).scalars())
        connection.execute(sa.delete(log).where(log.c.id.in_(ids[::7])))
    report = seal(database, chunk_rows=BLOCK_ROWS)
    assert report.settled and report.rows == ROWS - len(ids[::7])


@pytest.fixture(scope="module")
def template(postgres_server):
    """A database with a sealed, intact audit log; its name, for CREATE DATABASE … TEMPLATE."""
    url = new_database(postgres_server)
    database = AppDatabase(url)
    try:
        seed_audit_log(database)
        assert verify(database).intact
    finally:
        database.dispose()  # a template must have no connection open
    return make_url(url).database


def sealed_rows(database: AppDatabase) -> list[dict]:
    with database.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(sa.select(log).order_by(log.c.id))]


def changed(column: str, value, rng: random.Random):
    """Another value for a column: close to the old one where that is the harder case to catch."""
    if column in ("occurred_at", "deadline"):
        return (value or datetime(2026, 1, 1, tzinfo=UTC)) + timedelta(microseconds=rng.choice([1, 1000, 10**6]))
    if column in ("archive_uri", "actor", "detail") and value is not None and rng.random() < 0.5:
        return None
    if column == "action":
        return rng.choice([a for a in ("deleted", "redacted", "erased", "restored") if a != value])
    return (value or "") + rng.choice([" ", "x", "0"])


def tamper(database: AppDatabase, rng: random.Random, n: int) -> tuple[str, str, set[int], int | None]:
    """One tampering; returns (what, domain, audit ids that name it, chain position or None)."""
    rows = sealed_rows(database)
    used = {row["id"] for row in rows}
    kind = ("update", "delete", "insert")[n % 3]
    if kind == "insert":
        domain = rng.choice(DOMAINS)
        own = [row["id"] for row in rows if row["domain"] == domain]
        gap = rng.choice([i for i in range(own[0] + 1, own[-1]) if i not in used])
        with database.begin() as connection:
            connection.execute(sa.insert(log).values(
                id=gap, domain=domain, record_id=f"forged-{n}", action="deleted", run_id=f"run-{gap // 20}",
                policy_version="2026-11-30.2+abcdef012345"))
        return f"insert id {gap}", domain, {gap}, None
    row = rng.choice(rows)
    own = [r["id"] for r in rows if r["domain"] == row["domain"]]
    position = own.index(row["id"]) + 1
    if kind == "delete":
        with database.begin() as connection:
            connection.execute(sa.delete(log).where(log.c.id == row["id"]))
        return f"delete id {row['id']}", row["domain"], {row["id"]}, position
    column = rng.choice(CONTENT_COLUMNS)
    if column == "id":  # moved to an unused id of the range: a deletion here, an insertion there
        value = rng.choice([i for i in range(1, max(used)) if i not in used])
        named, position = {row["id"], value}, None
    elif column == "domain":  # moved to another chain: deleted from its own
        value = rng.choice([d for d in DOMAINS if d != row["domain"]] + ["forged_domain"])
        named = {row["id"]}
    else:
        value = changed(column, row[column], rng)
        named = {row["id"]}
    with database.begin() as connection:
        connection.execute(sa.update(log).where(log.c.id == row["id"]).values({column: value}))
    return f"update {column} of id {row['id']}", row["domain"], named, position


def copy_of(postgres_server, template: str) -> str:
    return new_database(postgres_server, template=template)


def drop(postgres_server, url: str) -> None:
    connection = psycopg2.connect(postgres_server.dsn("postgres"))
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f'DROP DATABASE "{make_url(url).database}"')
    connection.close()


def cli_verify(url: str, tmp_path) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RETENTION_")}
    environment.update({"RETENTION_DATABASE_URL": url, "RETENTION_HOME": str(tmp_path / "home"),
                        "RETENTION_ENV": "demo"})
    return subprocess.run([str(RETENTION_SCRIPT), "audit", "verify", "--no-anchors"], capture_output=True, text=True,
                          env=environment, timeout=120)


def asset_check(url: str, archive) -> dg.AssetCheckEvaluation:
    [asset] = build_audit_chain_defs().assets
    result = dg.materialize([asset], resources={"retention_stores": RetentionStores(
        database_url=url, archive_url=archive.as_uri())}, raise_on_error=False)
    assert result.success
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == INTACT_CHECK
    return check


def test_every_tampering_is_caught_naming_the_first_broken_link(postgres_server, template, tmp_path):
    rng = random.Random(SEED)
    caught, missed, sampled_cli, sampled_dagster = 0, [], 0, 0
    cli_every, dagster_every = (1, 1) if full() else (10, 20)
    for n in range(TAMPERINGS):
        url = copy_of(postgres_server, template)
        database = AppDatabase(url)
        try:
            what, domain, named, position = tamper(database, rng, n)
            verification = verify(database)
            links = {link.domain: link for link in verification.broken}
            link = links.get(domain)
            ok = (not verification.intact and link is not None and link.audit_id in named
                  and (position is None or link.position == position)
                  and f"audit row id {link.audit_id}" in link.message)
            if ok and n % cli_every == 0:  # the command an auditor runs: exit 1, the same first broken link
                sampled_cli += 1
                result = cli_verify(url, tmp_path)
                ok = result.returncode == 1 and f"first broken link: {link.message}" in result.stdout
            if ok and n % dagster_every == 0:  # the asset check of the daily audit/chain asset
                sampled_dagster += 1
                archive = tmp_path / f"archive-{n}"
                archive.mkdir()
                check = asset_check(url, archive)
                first = {entry["domain"]: entry for entry in check.metadata["first_broken_links"].value}
                ok = not check.passed and first.get(domain, {}).get("audit_id") in named
            if ok:
                caught += 1
            else:
                missed.append((n, what, domain, [link.message for link in verification.broken]))
        finally:
            database.dispose()
            drop(postgres_server, url)
    record("audit tampering: caught", f"{TAMPERINGS}/{TAMPERINGS}", f"{caught}/{TAMPERINGS}", caught == TAMPERINGS)
    record("audit tampering: also through `retention audit verify` and the asset check",
           "all caught" if full() else "all of a sample caught",
           f"{sampled_cli} through the CLI, {sampled_dagster} through the asset check", not missed)
    assert caught == TAMPERINGS, missed
