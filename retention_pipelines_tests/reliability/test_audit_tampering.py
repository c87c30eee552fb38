"""Audit tampering. An audit log, chained as it was written and anchored part way, is tampered
with directly in SQL in 100 seeded random ways, on its two tables as someone with the database's
credentials could: an UPDATE of a random column of a random batch row or record row, a DELETE of a
record row or of a whole batch, a forged record row added to an existing batch, a forged batch
linked right after a chain's end, and a batch changed with its whole chain linked again (caught
by the anchor only). Entries written before the anchor and after it are tampered with alike. Each
case runs on a fresh copy of one template database (CREATE DATABASE … TEMPLATE). The verifier
(engine/audit/verify.py, what `retention audit verify` runs) must catch every one and name the
first broken link: the tampered domain, the batch (its id, where the break has one) and its chain
position.

A record row's own id is not one of the columns tampered with: it is not in the link (links.py
spells a batch's fields and its records' ids and deadlines), so a change to it alone goes unseen.

Through the real console script and through Dagster's `audit_chain_intact` check, `make
reliability` (RELIABILITY_FULL=1) runs every case; CI, inside `make test`, a sample (every 10th and
every 20th case): a subprocess costs about a second and a materialization two, where the function
costs a few milliseconds, and the function is the same code both of them call.
"""

from __future__ import annotations

import json
import os
import random
import shutil
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
from retention_pipelines.engine.audit.anchor import anchor
from retention_pipelines.engine.audit.entries import write_entries
from retention_pipelines.engine.audit.links import python_link, utc_text
from retention_pipelines.engine.audit.verify import verify
from retention_pipelines.stores import AppDatabase
from retention_pipelines.stores.archive import LocalArchiveStore
from retention_pipelines_tests.support.audit_rows import relink
from retention_pipelines_tests.support.cli import RETENTION_SCRIPT
from retention_pipelines_tests.support.databases import new_database
from retention_pipelines_tests.support.figures import full, record

TAMPERINGS = 100
SEED = 9
DOMAINS = ("quiz_responses", "magic_link_tokens", "meal_plans", "email_blacklist")
ROWS = 400
ROWS_PER_RUN = 20
ANCHORED_RUNS = 12  # the first 240 entries are anchored, the last 160 written after the anchor
batches, records = schema.audit_batches, schema.audit_records
BATCH_COLUMNS = ("id", "domain", "seq", "action", "run_id", "occurred_at", "policy_version", "archive_uri", "actor",
                 "detail", "records", "prev_link", "link")
RECORD_COLUMNS = ("batch_id", "record_id", "deadline")
KINDS = ("update batch", "update record", "delete record", "delete batch", "insert record", "forged batch",
         "rewritten chain")


def seed_audit_log(database: AppDatabase, archive: LocalArchiveStore) -> None:
    """ROWS entries, the domains in random turns, with the columns a run or a person fills, a run's
    entries written in one transaction (a batch per stamp); anchored after ANCHORED_RUNS runs."""
    rng = random.Random(SEED)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    for run in range(ROWS // ROWS_PER_RUN):
        rows = []
        for n in range(run * ROWS_PER_RUN, (run + 1) * ROWS_PER_RUN):
            by_person = n % 11 == 0
            rows.append({
                "domain": rng.choice(DOMAINS), "record_id": f"rec-{n}",
                "action": "queue_resolved" if by_person else rng.choice(["deleted", "redacted", "erased"]),
                "run_id": f"run-{run}", "policy_version": "2026-11-30.2+abcdef012345",
                "archive_uri": f"s3://archive/batch-{n // 50}.jsonl" if n % 3 == 0 else None,
                "deadline": None if by_person else start - timedelta(days=n % 90, microseconds=n),
                "actor": "ops-lead" if by_person else None, "detail": "open → resolved" if by_person else None})
        with database.begin() as connection:
            write_entries(connection, rows)
        if run + 1 == ANCHORED_RUNS:
            anchor(database, archive)


@pytest.fixture(scope="module")
def template(postgres_server, tmp_path_factory):
    """A database with an intact, partly anchored audit log, its name (for CREATE DATABASE …
    TEMPLATE), and the folder of the archive that holds its anchor."""
    url = new_database(postgres_server)
    folder = tmp_path_factory.mktemp("tampering-archive")
    database = AppDatabase(url)
    try:
        seed_audit_log(database, LocalArchiveStore(folder))
        verification = verify(database, LocalArchiveStore(folder))
        assert verification.intact and verification.anchors_checked == len(DOMAINS), verification.broken
    finally:
        database.dispose()  # a template must have no connection open
    return make_url(url).database, folder


def chains(database: AppDatabase) -> tuple[list[dict], dict[int, list[dict]], dict[str, dict]]:
    """The batches in id order, their record rows, and each domain's head."""
    with database.connect() as connection:
        every = [dict(row._mapping) for row in connection.execute(sa.select(batches).order_by(batches.c.id))]
        rows: dict[int, list[dict]] = {}
        for row in connection.execute(sa.select(records).order_by(records.c.id)):
            rows.setdefault(row.batch_id, []).append(dict(row._mapping))
        heads = {row.domain: dict(row._mapping) for row in connection.execute(sa.select(schema.audit_chain_heads))}
    return every, rows, heads


def anchored_seq(folder, domain: str) -> int:
    [key] = LocalArchiveStore(folder).keys("audit_anchors/")
    heads = json.loads(LocalArchiveStore(folder).get(key))["heads"]
    return next(head["last_seq"] for head in heads if head["domain"] == domain)


def changed(column: str, value, rng: random.Random):
    """Another value for a column: close to the old one where that is the harder case to catch."""
    if column in ("occurred_at", "deadline"):
        return (value or datetime(2026, 1, 1, tzinfo=UTC)) + timedelta(microseconds=rng.choice([1, 1000, 10**6]))
    if column in ("archive_uri", "actor", "detail") and value is not None and rng.random() < 0.5:
        return None
    if column == "action":
        return rng.choice([a for a in ("deleted", "redacted", "erased", "restored") if a != value])
    if column == "records":
        return value + rng.choice([-1, 1])
    if column in ("prev_link", "link"):
        return value[:-1] + ("0" if value[-1] != "0" else "1")
    return (value or "") + rng.choice([" ", "x", "0"])


def tamper(database: AppDatabase, rng: random.Random, n: int, folder
           ) -> tuple[str, str, set[int | None], int | None, bool]:
    """One tampering; returns (what, domain, batch ids the first broken link may name (None: a break
    that names no batch), its chain position or None, whether it lands before the anchor)."""
    every, rows, heads = chains(database)
    kind = KINDS[n % len(KINDS)]
    batch = rng.choice([b for b in every if rows.get(b["id"])] if kind in ("update record", "delete record")
                       else every)
    domain, seq, batch_id = batch["domain"], batch["seq"], batch["id"]
    last = heads[domain]["last_seq"]
    anchored = seq <= anchored_seq(folder, domain)

    def run(statement) -> None:
        with database.begin() as connection:
            connection.execute(statement)

    if kind == "update batch":
        column = rng.choice(BATCH_COLUMNS)
        if column == "id":  # moved to an unused id: its records name a batch that is no longer there
            value = max(b["id"] for b in every) + 1000 + n
            named = {batch_id, value, None}
        elif column == "domain":  # moved to another chain (one without its position): gone from its own
            value = rng.choice([d for d in DOMAINS if d != domain and heads[d]["last_seq"] < seq] + ["forged_domain"])
            named = {batch_id, None}
        elif column == "seq":  # moved to a position no batch of the domain has
            value = last + 1000 + n
            named = {batch_id, None}
        else:
            value = changed(column, batch[column], rng)
            named = {batch_id}
        run(sa.update(batches).where(batches.c.id == batch_id).values({column: value}))
        return f"update {column} of batch {batch_id}", domain, named, seq, anchored
    if kind == "update record":
        row = rng.choice(rows[batch_id])
        column = rng.choice(RECORD_COLUMNS)
        named, position = {batch_id}, seq
        if column == "batch_id":  # moved to another batch: one short of a record, the other one over
            other = rng.choice([b for b in every if b["id"] != batch_id])
            value = other["id"]
            if other["domain"] == domain and other["seq"] < seq:  # the first break is then the other's
                named, position = {other["id"]}, other["seq"]
        else:
            value = changed(column, row[column], rng)
        run(sa.update(records).where(records.c.id == row["id"]).values({column: value}))
        return f"update {column} of record row {row['id']} (batch {batch_id})", domain, named, position, anchored
    if kind == "delete record":
        row = rng.choice(rows[batch_id])
        run(sa.delete(records).where(records.c.id == row["id"]))
        return f"delete record row {row['id']} (batch {batch_id})", domain, {batch_id}, seq, anchored
    if kind == "delete batch":  # its records with it: no row names it any more
        run(sa.delete(records).where(records.c.batch_id == batch_id))
        run(sa.delete(batches).where(batches.c.id == batch_id))
        return f"delete batch {batch_id}", domain, {batch_id, None}, seq, anchored
    if kind == "insert record":
        forged = max(r["id"] for own in rows.values() for r in own) + 1 + n
        run(sa.insert(records).values(id=forged, batch_id=batch_id, record_id=f"forged-{n}"))
        return f"insert record row {forged} into batch {batch_id}", domain, {batch_id}, seq, anchored
    if kind == "forged batch":  # linked right after the chain's end; the head left as it was
        end = next(b for b in every if b["domain"] == domain and b["seq"] == last)
        fields = {**end, "seq": last + 1, "records": 1, "run_id": f"forged-{n}",
                  "occurred_at": utc_text(end["occurred_at"])}
        link = python_link(end["link"], fields, [(10**9 + n, f"forged-{n}", None)])
        with database.begin() as connection:
            forged = connection.execute(sa.insert(batches).values(
                {**{k: v for k, v in end.items() if k != "id"}, "seq": last + 1, "records": 1,
                 "run_id": f"forged-{n}", "prev_link": end["link"], "link": link}).returning(batches.c.id)).scalar_one()
            connection.execute(sa.insert(records).values(id=10**9 + n, batch_id=forged, record_id=f"forged-{n}"))
        return f"forged batch {forged} after position {last}", domain, {None}, last + 1, False
    # A batch before the anchor changed, and every link of its chain computed again with the head:
    # the database alone agrees; the anchor recorded another link at its position.
    batch = rng.choice([b for b in every if b["seq"] <= anchored_seq(folder, b["domain"])])
    domain, batch_id = batch["domain"], batch["id"]
    run(sa.update(batches).where(batches.c.id == batch_id).values(action="kept"))
    relink(database, domain)
    position = anchored_seq(folder, domain)
    at = next(b["id"] for b in every if b["domain"] == domain and b["seq"] == position)
    return f"rewrite the chain from batch {batch_id}", domain, {at}, position, True


def copy_of(postgres_server, template: str) -> str:
    return new_database(postgres_server, template=template)


def drop(postgres_server, url: str) -> None:
    connection = psycopg2.connect(postgres_server.dsn("postgres"))
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f'DROP DATABASE "{make_url(url).database}"')
    connection.close()


def cli_verify(url: str, folder, tmp_path) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RETENTION_")}
    environment.update({"RETENTION_DATABASE_URL": url, "RETENTION_HOME": str(tmp_path / "home"),
                        "RETENTION_ENV": "demo", "RETENTION_ARCHIVE_URL": folder.as_uri()})
    return subprocess.run([str(RETENTION_SCRIPT), "audit", "verify"], capture_output=True, text=True,
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
    name, folder = template
    rng = random.Random(SEED)
    caught, missed, sampled_cli, sampled_dagster = 0, [], 0, 0
    phases = {True: [0, 0], False: [0, 0]}  # before / after the anchor: [tampered, caught]
    cli_every, dagster_every = (1, 1) if full() else (10, 20)
    for n in range(TAMPERINGS):
        url = copy_of(postgres_server, name)
        database = AppDatabase(url)
        try:
            what, domain, named, position, anchored = tamper(database, rng, n, folder)
            phases[anchored][0] += 1
            verification = verify(database, LocalArchiveStore(folder))
            links = {link.domain: link for link in verification.broken}
            link = links.get(domain)
            ok = (not verification.intact and link is not None and link.audit_id in named
                  and (position is None or link.position == position)
                  and link.message.startswith(f"domain {domain}, ")
                  and (link.audit_id is None or f"batch id {link.audit_id}" in link.message))
            if ok and n % cli_every == 0:  # the command an auditor runs: exit 1, the same first broken link
                sampled_cli += 1
                result = cli_verify(url, folder, tmp_path)
                ok = result.returncode == 1 and f"first broken link: {link.message}" in result.stdout
            if ok and n % dagster_every == 0:  # the asset check of the daily audit/chain asset
                sampled_dagster += 1
                archive = tmp_path / f"archive-{n}"
                shutil.copytree(folder, archive)  # the anchor with it: the check reads it too
                check = asset_check(url, archive)
                first = {entry["domain"]: entry for entry in check.metadata["first_broken_links"].value}
                ok = not check.passed and first.get(domain, {}).get("audit_id") in named
            if ok:
                caught += 1
                phases[anchored][1] += 1
            else:
                missed.append((n, what, domain, [link.message for link in verification.broken]))
        finally:
            database.dispose()
            drop(postgres_server, url)
    record("audit tampering: caught", f"{TAMPERINGS}/{TAMPERINGS}", f"{caught}/{TAMPERINGS}", caught == TAMPERINGS)
    for before, label in ((True, "entries anchored"), (False, "entries written after the anchor")):
        tampered, found = phases[before]
        record(f"audit tampering: caught, {label}", "all, at least one", f"{found}/{tampered}",
               tampered > 0 and found == tampered)
    record("audit tampering: also through `retention audit verify` and the asset check",
           "all caught" if full() else "all of a sample caught",
           f"{sampled_cli} through the CLI, {sampled_dagster} through the asset check", not missed)
    assert caught == TAMPERINGS, missed
