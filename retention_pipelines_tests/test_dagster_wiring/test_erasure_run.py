"""The erasure run through Dagster, as an operator launches it: a subject present in all four
domains, one of their records under a legal hold, erased in one run — every other record gone or
redacted, their archived copies unreadable, the held record kept with a queue item, the request
marked with its outcome; the young blacklist entry kept until its deadline by policy, the request
checked again and completed once it has gone. The run is one step: one domain's asset materializes
alone, the outcome alone erases every domain first, and a run retried from its failure in a fresh
process, the instance's local storage gone, succeeds. Its dry run is a job of its own that leaves
the assets' history and the database as they were. Real PostgreSQL, Redis, a Dagster instance, local
archive and blob folders and S3 (moto)."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import shutil
import subprocess
import sys
import uuid
from datetime import timedelta

import dagster as dg
import pytest
import sqlalchemy as sa

from retention_pipelines import schema
from retention_pipelines.dagster_wiring.common import APP_DATABASE_POOL, DRY_RUN_TAG
from retention_pipelines.dagster_wiring.erasure_run import (
    DRY_RUN_STATUS,
    ERASURE_BATCH_JOB,
    ERASURE_BATCH_OP,
    ERASURE_DRY_RUN_JOB,
    ERASURE_JOB,
    ERASURE_PARTITIONS,
    ERASURE_STEP,
    OUTCOME_KEY,
    SUBJECT_ERASED_CHECK,
    build_erasure_run_defs,
    domain_key,
    domain_of,
)
from retention_pipelines.dagster_wiring.resources import RetentionStores
from retention_pipelines.engine.archive.format import read_manifest, read_rows
from retention_pipelines.engine.gdpr.requests import ErasureRequests, Outcome
from retention_pipelines.engine.oversight.queue import ManualQueue
from retention_pipelines.engine.report.figures import build_report
from retention_pipelines.engine.report.render import render_report
from retention_pipelines.stores import archive_store_from_url, blob_store_from_url, domain_locks
from retention_pipelines_tests.support import erasure_rows
from retention_pipelines_tests.support.app_rows import _insert
from retention_pipelines_tests.support.archives import opened_pdf
from retention_pipelines_tests.support.cli import dagster_home
from retention_pipelines_tests.support.repository import REPOSITORY

ANN = "Ann.Subject@Example.com"
BOB = "bob.other@example.com"


@pytest.fixture
def instance(tmp_path):
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        yield instance


@pytest.fixture(params=["local", "s3"])
def stores(request, pg_url, redis_url, tmp_path):
    if request.param == "s3":
        archive_url = request.getfixturevalue("s3_archive_url")
    else:
        archive_url = (tmp_path / "archive").as_uri()
    return RetentionStores(database_url=pg_url, archive_url=archive_url, redis_url=redis_url,
                           blob_url=(tmp_path / "blobs").as_uri())


def rows_of(database, table: str) -> dict[str, dict]:
    with database.engine.connect() as connection:
        return {str(row.id): dict(row._mapping) for row in connection.execute(sa.text(f"SELECT * FROM {table}"))}


class World:
    """Ann in all four domains (one meal plan under a legal hold), Bob beside her everywhere;
    earlier retention runs have archived some of both into the same objects."""

    def __init__(self, database, stores: RetentionStores, policies):
        self.database, self.stores, self.policies = database, stores, policies
        now = database.now()
        at = database.bind_time
        blobs = blob_store_from_url(stores.settings().resolved_blob_url())
        for key in ("plans/ann-new.pdf", "plans/ann-held.pdf", "plans/ann-old.pdf", "plans/bob-old.pdf"):
            blobs.put(key, b"%PDF-1.7 " + key.encode())
        self.quiz = {who: _insert(database, "quiz_responses", [
            {"session_id": uuid.uuid4(), "email": email, "answers": {"weight_kg": 70},
             "created_at": at(now - timedelta(hours=1))}])[0]
            for who, email in (("ann", ANN.lower()), ("bob", BOB))}
        self.tokens = {who: _insert(database, "magic_link_tokens", [
            {"email": email, "token_hash": uuid.uuid4().hex, "created_at": at(now),
             "expires_at": at(now + timedelta(minutes=15))}])[0]
            for who, email in (("ann", ANN), ("bob", BOB))}
        plans = _insert(database, "meal_plans", [
            {"payment_id": f"pay_{name}", "email": email, "pdf_blob_key": f"plans/{name}.pdf", "created_at": at(when)}
            for name, email, when in (("ann-new", ANN, now - timedelta(days=3)),
                                      ("ann-held", ANN, now - timedelta(days=5)),
                                      ("ann-old", ANN.upper(), now - timedelta(days=100)),
                                      ("bob-old", BOB, now - timedelta(days=100)))])
        self.plans = dict(zip(("ann-new", "ann-held", "ann-old", "bob-old"), plans))
        listed = _insert(database, "email_blacklist", [
            {"email": email, "reason": "chargeback", "created_at": at(when)}
            for email, when in ((ANN, now - timedelta(days=95)), (BOB, now - timedelta(days=95)),
                                (ANN.lower(), now - timedelta(days=2)), (BOB, now - timedelta(days=2)))])
        self.blacklist = dict(zip(("ann-old", "bob-old", "ann-new", "bob-new"), listed))
        # The scheduled runs archive (and delete or redact) the old ones of both, side by side.
        for name in ("meal_plans", "email_blacklist"):
            report = stores.engine(policies.domains[name], policies.policy_version).run(f"retention-{name}")
            assert report.acted.acted_on == 2
        with database.engine.begin() as connection:
            connection.execute(sa.insert(schema.legal_holds).values(
                domain="meal_plans", record_id=self.plans["ann-held"], reason="litigation hold, case 17"))
        self.request = ErasureRequests(database, stores.settings().resolved_erasure_hash_key()).request(ANN)

    def archive(self):
        return archive_store_from_url(self.stores.settings().resolved_archive_url())

    def archived_rows(self) -> dict[str, dict | None]:
        """Every archived blacklist row, decrypted where its key lives: {record id: row or None}."""
        store, keys, found = self.archive(), self.stores.archive_keys, {}
        for uri in self.archive_uris("email_blacklist"):
            key = store.key_of(uri)
            manifest = read_manifest(store.get(key + ".manifest.json"))
            wanted = keys.unwrap({segment["key"] for segment in manifest["segments"]})
            found.update(dict(read_rows(store.get(key), manifest, wanted)))
        return found

    def archived_pdf(self, record_id: str) -> bytes | None:
        store = self.archive()
        sealed = store.get(f"meal_plans/blobs/{record_id}")
        [(key_id, key)] = self.stores.archive_keys.unwrap({sealed[4:36].decode()}).items()
        return None if key is None else opened_pdf(sealed, key, "meal_plans")

    def archive_uris(self, domain: str) -> set[str]:
        with self.database.engine.connect() as connection:
            return set(connection.execute(sa.select(schema.audit_log.c.archive_uri).where(
                schema.audit_log.c.domain == domain, schema.audit_log.c.archive_uri.is_not(None))).scalars())


DOMAINS = ("quiz_responses", "magic_link_tokens", "meal_plans", "email_blacklist")


def erasure_defs(world: World, instance) -> dg.Definitions:
    """The erasure run's assets and jobs on the world's stores, the request's partition added."""
    defs = build_erasure_run_defs([p for p in world.policies.domains.values() if p.enabled],
                                  world.policies.policy_version)
    instance.add_dynamic_partitions(ERASURE_PARTITIONS.name, [str(world.request.id)])
    return dg.Definitions(assets=defs.assets, jobs=defs.jobs, resources={"retention_stores": world.stores})


def run_erasure(world: World, instance, tags=None):
    job = erasure_defs(world, instance).resolve_job_def(ERASURE_JOB)
    return job.execute_in_process(instance=instance, partition_key=str(world.request.id), tags=tags or {},
                                  raise_on_error=False)


def run_batch(world: World, instance, run_request: dg.RunRequest):
    """The batch run the sensor asked for, executed in process on the instance as the daemon launches it."""
    job = erasure_defs(world, instance).resolve_job_def(ERASURE_BATCH_JOB)
    return job.execute_in_process(instance=instance, run_config=run_request.run_config, tags=run_request.tags,
                                  raise_on_error=False)


def dry_run(world: World, instance):
    """The dry-run job for the request, as the launchpad and `retention erasure run --dry-run` start it."""
    job = erasure_defs(world, instance).resolve_job_def(ERASURE_DRY_RUN_JOB)
    return job.execute_in_process(instance=instance, partition_key=str(world.request.id), raise_on_error=False)


def materialize(world: World, instance, selection, partitioned: bool = True):
    """Some of the erasure run's assets or checks, as the asset page materializes them, for the
    request's partition (the check is not partitioned: alone, it has none)."""
    defs = build_erasure_run_defs([p for p in world.policies.domains.values() if p.enabled],
                                  world.policies.policy_version)
    instance.add_dynamic_partitions(ERASURE_PARTITIONS.name, [str(world.request.id)])
    return dg.materialize(list(defs.assets), selection=selection, instance=instance,
                          partition_key=str(world.request.id) if partitioned else None,
                          resources={"retention_stores": world.stores}, raise_on_error=False)


def outcome_of(result) -> dict:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key == OUTCOME_KEY]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def output_metadata(result) -> dict:
    return {k: v.value for e in result.all_events if e.event_type_value == "STEP_OUTPUT"
            for k, v in e.step_output_data.metadata.items()}


def materialized(result) -> dict[dg.AssetKey, dict]:
    return {e.asset_key: {k: v.value for k, v in e.materialization.metadata.items()}
            for e in result.get_asset_materialization_events()}


def failure_messages(result) -> str:
    return " ".join(e.step_failure_data.user_failure_data.description for e in result.all_events
                    if e.event_type_value == "STEP_FAILURE" and e.step_failure_data.user_failure_data)


def asset_events(instance, run_id: str) -> list:
    """Every event of the run about an asset: materialized, planned, check evaluated."""
    return [e for e in instance.all_logs(run_id) if e.dagster_event and (
        e.dagster_event.asset_key or e.dagster_event.event_type_value.startswith("ASSET_CHECK"))]


def everything(database) -> dict[str, list]:
    """Every row of the app's tables and the retention tables."""
    with database.engine.connect() as connection:
        return {name: sorted(repr(tuple(bytes(v) if isinstance(v, memoryview) else v for v in row))
                             for row in connection.execute(sa.text(f"SELECT * FROM {name}")))
                for name in (*DOMAINS, *schema.metadata.tables)}


def test_the_erasure_run_is_one_step_in_the_app_database_pool_and_its_dry_run_a_job_of_one_op():
    from retention_pipelines.definitions import defs as location

    assert [node.name for node in location.resolve_job_def(ERASURE_JOB).nodes] == [ERASURE_STEP]
    [step] = [assets for assets in location.assets if OUTCOME_KEY in getattr(assets, "keys", ())]
    assert set(step.keys) == {domain_key(name) for name in DOMAINS} | {OUTCOME_KEY}
    assert step.op.pool == APP_DATABASE_POOL and step.can_subset
    assert {key.name for key in step.check_keys} == {SUBJECT_ERASED_CHECK}
    # The sensor's batch run: one op in the same pool, whatever number of requests it erases.
    batch = location.resolve_job_def(ERASURE_BATCH_JOB)
    assert [node.name for node in batch.nodes] == [ERASURE_BATCH_OP]
    assert batch.nodes[0].definition.pool == APP_DATABASE_POOL
    dry = location.resolve_job_def(ERASURE_DRY_RUN_JOB)
    assert [node.name for node in dry.nodes] == ["gdpr_erasure_dry_run"] and dry.partitions_def == ERASURE_PARTITIONS
    assert dry.asset_layer.asset_graph.get_all_asset_keys() == set()  # it materializes nothing


def test_a_subject_in_all_four_domains_is_erased_in_one_run_except_the_held_record(pg_database, stores, instance,
                                                                                  policies):
    world = World(pg_database, stores, policies)
    before = world.archived_rows()
    assert before[world.blacklist["ann-old"]]["email"] == ANN and before[world.blacklist["bob-old"]]["email"] == BOB
    assert world.archived_pdf(world.plans["ann-old"]).startswith(b"%PDF")

    result = run_erasure(world, instance)
    assert result.success, [e.message for e in result.all_events if e.event_type_value == "STEP_FAILURE"]

    # Every other record of Ann's gone or redacted, but her blacklist entry younger than its 90 days;
    # Bob's untouched.
    assert set(rows_of(pg_database, "quiz_responses")) == {world.quiz["bob"]}
    assert set(rows_of(pg_database, "magic_link_tokens")) == {world.tokens["bob"]}
    assert set(rows_of(pg_database, "email_blacklist")) == {world.blacklist["bob-new"], world.blacklist["ann-new"]}
    plans = rows_of(pg_database, "meal_plans")
    held, new, old = (plans[world.plans[name]] for name in ("ann-held", "ann-new", "ann-old"))
    assert held["email"] == ANN and held["pdf_blob_key"] == "plans/ann-held.pdf" and held["pdf_deleted_at"] is None
    for erased in (new, old):
        assert erased["email"] == f"erased-by-request-{world.request.id}@erased.invalid"
        assert erased["pdf_blob_key"] is None and erased["pdf_deleted_at"] is not None
    assert plans[world.plans["bob-old"]]["email"] == BOB
    blobs = blob_store_from_url(stores.settings().resolved_blob_url())
    assert blobs.get("plans/ann-new.pdf") is None and blobs.get("plans/ann-held.pdf") is not None

    # Her archived copies unreadable, Bob's in the very same objects still readable.
    after = world.archived_rows()
    assert after[world.blacklist["ann-old"]] is None and world.blacklist["ann-new"] not in after  # not yet archived
    assert after[world.blacklist["bob-old"]] == before[world.blacklist["bob-old"]]
    assert world.archived_pdf(world.plans["ann-old"]) is None and world.archived_pdf(world.plans["ann-new"]) is None
    assert world.archived_pdf(world.plans["bob-old"]).startswith(b"%PDF")

    # The held record has its queue item; the request its outcome, its address gone.
    [item] = [i for i in ManualQueue(pg_database, policies.policy_version).list() if i.reason == "legal_hold_conflict"]
    assert (item.domain, item.record_id, item.status) == ("meal_plans", world.plans["ann-held"], "open")
    request = ErasureRequests(pg_database).get(world.request.id)
    assert request.status == "partially_blocked" and request.completed_at is not None
    assert "1 kept under legal hold" in request.outcome and "unreadable" in request.outcome
    assert "email_blacklist: 1 kept until deadline by policy" in request.outcome
    [kept] = request.kept_by_policy
    assert (kept.domain, kept.record_ids) == ("email_blacklist", (world.blacklist["ann-new"],))
    listed_at = rows_of(pg_database, "email_blacklist")[world.blacklist["ann-new"]]["created_at"]
    assert kept.until == listed_at + timedelta(days=90) == request.details.recheck_after
    assert "legal claims" in kept.reason
    with pg_database.engine.connect() as connection:
        assert connection.execute(sa.select(schema.erasure_requests.c.email)).scalar_one() is None
        audit = [dict(r._mapping) for r in connection.execute(sa.select(schema.audit_log))]
    erased = {(a["domain"], a["record_id"]) for a in audit if a["action"] == "erased"}
    assert erased == {("quiz_responses", world.quiz["ann"]), ("magic_link_tokens", world.tokens["ann"]),
                      ("meal_plans", world.plans["ann-new"]), ("meal_plans", world.plans["ann-old"])}
    assert len([a for a in audit if a["action"] == "erased"]) == len(erased)
    assert [a["domain"] for a in audit if a["action"] == "key_destroyed"] == ["gdpr"]
    assert "@" not in json.dumps([{k: v for k, v in a.items() if k in ("record_id", "detail", "archive_uri")}
                                  for a in audit])

    outcome = outcome_of(result)
    assert outcome["status"] == "partially_blocked" and outcome["archive_keys_destroyed"] == 1
    assert outcome["records_kept_under_legal_hold"] == 1 and outcome["rows_erased"] == 4
    assert outcome["records_kept_until_deadline"] == 1
    [check] = [c for c in result.get_asset_check_evaluations() if c.check_name == SUBJECT_ERASED_CHECK]
    assert check.passed
    shown = json.dumps([{k: str(v.value) for k, v in e.materialization.metadata.items()}
                        for e in result.get_asset_materialization_events()])
    assert "@" not in shown

    # The month's report shows it: the request with its outcome, the records erased per domain, the
    # conflict in the queue, the key destroyed; no address anywhere in it.
    month = f"{pg_database.now():%Y-%m}"
    files = render_report(build_report(pg_database, policies, month))
    tables = {name: list(csv.DictReader(io.StringIO(data.decode())))
              for name, data in files.items() if name.endswith(".csv")}
    [listed] = [r for r in tables["erasure_requests.csv"] if r["id"] == str(world.request.id)]
    assert listed["status"] == "partially_blocked" and listed["deadline"] == "met"
    assert listed["kept_until_deadline"] == f"email_blacklist until {kept.until:%Y-%m-%d %H:%M}"
    assert tables["erasure_summary.csv"][0]["partially_blocked"] == "1"
    assert tables["erasure_summary.csv"][0]["kept_until_deadline"] == "1"
    today = [r for r in tables["removals_per_day.csv"] if r["day"] == f"{pg_database.now():%Y-%m-%d}"]
    assert {r["domain"]: int(r["erased"]) for r in today if int(r["erased"])} == {
        "quiz_responses": 1, "magic_link_tokens": 1, "meal_plans": 2}
    [conflict] = [r for r in tables["queue_items.csv"] if r["reason"] == "legal_hold_conflict"]
    assert conflict["record_id"] == world.plans["ann-held"] and conflict["status"] == "open"
    assert {r["domain"]: r["keys_destroyed"] for r in tables["summary.csv"]}.get("gdpr") == "1"
    for name, data in files.items():
        assert ANN.lower().encode() not in data.lower() and BOB.encode() not in data, name

    # A rerun does nothing twice.
    again = run_erasure(world, instance)
    assert again.success and outcome_of(again)["rows_erased"] == 0
    with pg_database.engine.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(schema.audit_log)).scalar_one() == len(audit)


def test_a_dry_run_changes_nothing_creates_no_key_takes_no_lock_and_leaves_the_assets_history_alone(
        pg_database, stores, instance, policies, redis_url, tmp_path, monkeypatch):
    world = World(pg_database, stores, policies)
    with pg_database.engine.connect() as connection:
        keys_before = connection.execute(sa.select(sa.func.count()).select_from(schema.data_keys)).scalar_one()
    tables = {name: rows_of(pg_database, name) for name in ("quiz_responses", "magic_link_tokens", "meal_plans",
                                                            "email_blacklist")}
    before = everything(pg_database)
    # A lock another run holds: a dry run that took it would fail at once.
    monkeypatch.setenv("RETENTION_ERASURE_LOCK_WAIT_SECONDS", "0")
    held = domain_locks(redis_url, tmp_path / "locks", 30).acquire("meal_plans")
    try:
        result = dry_run(world, instance)
        held.ensure_held()  # still ours: the dry run neither took nor broke it
    finally:
        held.release()
    assert result.success, failure_messages(result)
    would = output_metadata(result)
    assert (would["rows_erased"], would["dry_run"], would["status"]) == (4, True, DRY_RUN_STATUS)
    assert would["records_kept_under_legal_hold"] == 1 and would["records_kept_until_deadline"] == 1
    domains = {domain_of(key): value for key, value in would.items() if domain_of(key)}
    assert set(domains) == set(DOMAINS)
    assert domains["meal_plans"]["rows_erased"] == 2
    assert domains["meal_plans"]["held_record_ids"] == [world.plans["ann-held"]]
    assert domains["email_blacklist"]["records_kept_until_deadline"] == 1
    assert "@" not in json.dumps(would)
    assert {name: rows_of(pg_database, name) for name in tables} == tables
    assert everything(pg_database) == before
    assert ErasureRequests(pg_database).get(world.request.id).status == "received"
    with pg_database.engine.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(schema.data_keys)).scalar_one() == keys_before
    assert ManualQueue(pg_database, policies.policy_version).list() == []
    # Nothing in the assets' history: no materialization, no check evaluation, no planned asset.
    assert result.get_asset_materialization_events() == [] and result.get_asset_check_evaluations() == []
    assert asset_events(instance, result.run_id) == []
    assert instance.get_latest_materialization_event(OUTCOME_KEY) is None
    assert instance.get_materialized_partitions(domain_key("meal_plans")) == set()


def test_the_erasure_job_refuses_a_run_tagged_dry_and_changes_nothing(pg_database, stores, instance, policies):
    world = World(pg_database, stores, policies)
    before = everything(pg_database)
    result = run_erasure(world, instance, tags={DRY_RUN_TAG: "true"})
    assert not result.success
    assert ERASURE_DRY_RUN_JOB in failure_messages(result)
    assert everything(pg_database) == before
    assert materialized(result) == {} and result.get_asset_check_evaluations() == []


def test_one_domains_asset_materialized_alone_erases_that_domain_only_and_records_only_it(
        pg_database, stores, instance, policies):
    world = World(pg_database, stores, policies)
    others = {name: rows_of(pg_database, name) for name in DOMAINS if name != "quiz_responses"}
    result = materialize(world, instance, [domain_key("quiz_responses")])
    assert result.success, failure_messages(result)
    recorded = materialized(result)
    assert set(recorded) == {domain_key("quiz_responses")}
    assert recorded[domain_key("quiz_responses")]["rows_erased"] == 1
    assert result.get_asset_check_evaluations() == []
    assert set(rows_of(pg_database, "quiz_responses")) == {world.quiz["bob"]}
    assert {name: rows_of(pg_database, name) for name in others} == others
    with pg_database.engine.connect() as connection:
        actions = connection.execute(sa.select(schema.audit_log.c.domain, schema.audit_log.c.action).where(
            schema.audit_log.c.action.in_(["erased", "key_destroyed"]))).all()
    assert [tuple(a) for a in actions] == [("quiz_responses", "erased")]
    assert ErasureRequests(pg_database).get(world.request.id).status == "received"  # only the outcome completes it
    assert instance.get_latest_materialization_event(OUTCOME_KEY) is None


def test_the_outcome_materialized_alone_erases_every_domain_first_and_records_only_itself(
        pg_database, stores, instance, policies):
    world = World(pg_database, stores, policies)
    result = materialize(world, instance, [OUTCOME_KEY])
    assert result.success, failure_messages(result)
    assert set(materialized(result)) == {OUTCOME_KEY}
    outcome = outcome_of(result)
    assert outcome["status"] == "partially_blocked" and outcome["rows_erased"] == 4
    assert outcome["archive_keys_destroyed"] == 1
    assert set(rows_of(pg_database, "quiz_responses")) == {world.quiz["bob"]}
    assert set(rows_of(pg_database, "magic_link_tokens")) == {world.tokens["bob"]}
    assert ErasureRequests(pg_database).get(world.request.id).status == "partially_blocked"
    assert [c.check_name for c in result.get_asset_check_evaluations()] == [SUBJECT_ERASED_CHECK]
    assert all(instance.get_latest_materialization_event(domain_key(name)) is None for name in DOMAINS)


def test_the_check_alone_is_refused_and_erases_nothing(pg_database, stores, instance, policies):
    world = World(pg_database, stores, policies)
    before = everything(pg_database)
    result = materialize(world, instance, dg.AssetSelection.checks(dg.AssetCheckKey(OUTCOME_KEY, SUBJECT_ERASED_CHECK)),
                         partitioned=False)
    assert not result.success
    assert "subject_erased evaluates the outcome of an erasure" in failure_messages(result)
    assert everything(pg_database) == before
    assert materialized(result) == {}


def erasure_job_in_a_process(env: dict, *args: str) -> dict:
    """The erasure job executed in a process of its own, on the instance of env's DAGSTER_HOME."""
    done = subprocess.run([sys.executable, "-m", "retention_pipelines_tests.support.runners.erasure_job", *args],
                          cwd=REPOSITORY, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_failed_run_retried_from_its_failure_in_a_fresh_process_without_local_storage_succeeds(
        pg_database, pg_url, redis_url, tmp_path):
    """The first run fails on a lock another run holds (meal_plans, the third domain in policy order),
    after erasing the two before it; the pod that ran it is gone with its disk. Its retry from the
    failure, in another process, starts again from the database and completes the request."""
    home = dagster_home(tmp_path / "dagster_home")
    stores = RetentionStores(database_url=pg_url, archive_url=(tmp_path / "archive").as_uri(), redis_url=redis_url,
                             blob_url=(tmp_path / "blobs").as_uri())
    erasure_rows.insert_subject_rows(pg_database, stores.blob_store, ann_recently_blacklisted=False)
    request = ErasureRequests(pg_database, stores.settings().resolved_erasure_hash_key()).request(erasure_rows.ANN)
    env = {**os.environ, "DAGSTER_HOME": str(home), "RETENTION_DATABASE_URL": pg_url,
           "RETENTION_ARCHIVE_URL": stores.archive_url, "RETENTION_REDIS_URL": redis_url,
           "RETENTION_BLOB_URL": stores.blob_url, "RETENTION_ERASURE_LOCK_WAIT_SECONDS": "0"}
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions(ERASURE_PARTITIONS.name, [str(request.id)])

    held = domain_locks(redis_url, tmp_path / "locks", 60).acquire("meal_plans")
    try:
        failed = erasure_job_in_a_process(env, "run", str(request.id))
    finally:
        held.release()
    assert not failed["success"]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert {key.path[-1] for key in (domain_key("quiz_responses"), domain_key("magic_link_tokens"))
                if instance.get_latest_materialization_event(key)} == {"quiz_responses", "magic_link_tokens"}
        assert instance.get_latest_materialization_event(OUTCOME_KEY) is None
        storage = instance.storage_directory()
    assert {e["domain"] for e in erasure_rows.audit(pg_database, "erased")} == {"quiz_responses",
                                                                               "magic_link_tokens"}
    assert ErasureRequests(pg_database).get(request.id).status == "received"
    shutil.rmtree(storage)  # the run's pod is gone, and its local storage with it

    retried = erasure_job_in_a_process(env, "reexecute-from-failure", failed["run_id"])
    assert retried["success"], retried
    with dg.DagsterInstance.from_config(str(home)) as instance:
        run = instance.get_run_by_id(retried["run_id"])
        assert run.parent_run_id == failed["run_id"] and run.step_keys_to_execute == [ERASURE_STEP]
        assert instance.get_latest_materialization_event(OUTCOME_KEY).run_id == retried["run_id"]
    assert ErasureRequests(pg_database).get(request.id).status == "completed"
    erased = erasure_rows.audit(pg_database, "erased")
    assert {e["domain"] for e in erased} == set(DOMAINS)
    assert len({(e["domain"], e["record_id"]) for e in erased}) == len(erased)  # each record once
    assert len(erasure_rows.audit(pg_database, "key_destroyed")) >= 1


def test_the_sensor_adds_a_partition_for_each_open_request_and_launches_one_batch_run(
        pg_database, pg_url, redis_url, tmp_path, instance, policies):
    stores = RetentionStores(database_url=pg_url, archive_url=(tmp_path / "archive").as_uri(), redis_url=redis_url)
    requests = ErasureRequests(pg_database, b"k" * 32)
    first, second = requests.request("one@example.com"), requests.request("two@example.com")
    requests.complete(second.id, "done by hand")
    defs = build_erasure_run_defs([p for p in policies.domains.values() if p.enabled], policies.policy_version)
    [sensor] = defs.sensors
    with dg.build_sensor_context(instance=instance, resources={"retention_stores": stores}) as context:
        result = sensor(context)
    [batch] = result.run_requests
    assert batch.run_config["ops"][ERASURE_BATCH_OP]["config"]["requests"] == [
        {"request_id": first.id, "recheck": "", "attempt": 1}]
    [add] = result.dynamic_partitions_requests
    assert list(add.partition_keys) == [str(first.id)]
    assert "@" not in repr(result)


def test_a_request_kept_open_by_the_blacklist_is_checked_again_and_completed_once_the_entry_has_gone(
        pg_database, stores, instance, policies):
    """The blacklist keeps Ann's young entry until its deadline, "never one second earlier", even on
    her request: the request ends partially blocked, saying until when; once that time has come the
    sensor launches the run again, which finds the entry past its deadline, erases it, destroys the
    key its archived copy was just written under, and completes the request."""
    world = World(pg_database, stores, policies)
    with pg_database.engine.begin() as connection:
        connection.execute(sa.delete(schema.legal_holds))  # only the policy keeps anything of hers
    defs = build_erasure_run_defs([p for p in policies.domains.values() if p.enabled], policies.policy_version)
    [sensor] = defs.sensors

    def sensed():
        with dg.build_sensor_context(instance=instance, resources={"retention_stores": world.stores}) as context:
            return sensor(context).run_requests

    first = run_batch(world, instance, sensed()[0])
    assert first.success
    requests = ErasureRequests(pg_database)
    answered = requests.get(world.request.id)
    assert answered.status == "partially_blocked" and outcome_of(first)["records_kept_until_deadline"] == 1
    assert world.blacklist["ann-new"] in rows_of(pg_database, "email_blacklist")
    assert sensed() == []  # nothing to do before the entry's deadline
    assert [i for i in ManualQueue(pg_database, policies.policy_version).list()] == []  # no person is needed

    # Ninety days on (the entry's clock moved back, as the database's own cannot be moved forward).
    with pg_database.engine.begin() as connection:
        connection.execute(sa.text("UPDATE email_blacklist SET created_at = now() - interval '90 days 1 second' "
                                   "WHERE id = :id"), {"id": world.blacklist["ann-new"]})
        stored = Outcome.read(connection.execute(sa.select(schema.erasure_requests.c.outcome)).scalar_one())
        connection.execute(sa.update(schema.erasure_requests).values(
            outcome=dataclasses.replace(stored, recheck_after=pg_database.now()).text()))
    [again] = sensed()
    [round_] = again.run_config["ops"][ERASURE_BATCH_OP]["config"]["requests"]
    due = requests.get(world.request.id).details.recheck_after
    assert round_ == {"request_id": world.request.id, "recheck": due.isoformat(), "attempt": 1}
    rechecked = run_batch(world, instance, again)
    assert rechecked.success

    done = requests.get(world.request.id)
    assert done.status == "completed" and done.completed_at == answered.completed_at  # answered on time, once
    assert done.details.completed_on_recheck_at is not None and "checked again" in done.outcome
    assert [k.record_ids for k in done.kept_by_policy] == [(world.blacklist["ann-new"],)]  # on record still
    assert set(rows_of(pg_database, "email_blacklist")) == {world.blacklist["bob-new"]}
    assert world.archived_rows()[world.blacklist["ann-new"]] is None  # archived by the rerun, its key destroyed
    assert sensed() == []
    month = f"{pg_database.now():%Y-%m}"
    files = render_report(build_report(pg_database, policies, month))
    [listed] = [r for r in csv.DictReader(io.StringIO(files["erasure_requests.csv"].decode()))
                if r["id"] == str(world.request.id)]
    assert (listed["status"], listed["kept_until_deadline"]) == ("completed", "")


def test_an_archive_copy_held_under_the_subjects_key_keeps_the_key(pg_database, stores, instance, policies):
    """A hold placed on a blacklist entry already deleted (archived): destroying the key would
    destroy what the hold keeps, so the key stays and the outcome says why."""
    world = World(pg_database, stores, policies)
    with pg_database.engine.begin() as connection:
        connection.execute(sa.insert(schema.legal_holds).values(
            domain="email_blacklist", record_id=world.blacklist["ann-old"], reason="fraud case 3"))
    result = run_erasure(world, instance)
    assert result.success
    outcome = outcome_of(result)
    assert outcome["archive_keys_destroyed"] == 0 and outcome["archive_key_kept_for_a_hold"] is True
    assert world.archived_rows()[world.blacklist["ann-old"]]["email"] == ANN
    request = ErasureRequests(pg_database).get(world.request.id)
    assert request.status == "partially_blocked" and f"email_blacklist/{world.blacklist['ann-old']}" in request.outcome


def test_archive_keys_are_in_the_database_only_wrapped(pg_database, stores, policies):
    World(pg_database, stores, policies)
    with pg_database.engine.connect() as connection:
        wrapped = connection.execute(sa.select(schema.data_keys.c.wrapped_key)).scalars().all()
    assert wrapped and all(len(w) == 12 + 32 + 16 for w in wrapped)
    master = stores.settings().resolved_archive_master_key()
    assert all(master not in bytes(w) for w in wrapped)


def test_once_the_hold_is_released_a_retry_of_the_conflict_erases_the_record(pg_database, stores, instance, policies):
    from retention_pipelines.engine.resolution.retry import retry_item

    world = World(pg_database, stores, policies)
    assert run_erasure(world, instance).success
    queue = ManualQueue(pg_database, policies.policy_version)
    [item] = [i for i in queue.list() if i.reason == "legal_hold_conflict"]
    engine = stores.engine(policies.domains["meal_plans"], policies.policy_version)

    with pytest.raises(Exception, match="a retry cannot override a hold"):
        queue.retryable(item.id)
    with pg_database.engine.begin() as connection:
        connection.execute(sa.update(schema.legal_holds).values(released_at=sa.func.now()))
    outcome = retry_item(queue, queue.retryable(item.id), engine, "retry-run", "ops-ines",
                         erasure=stores.subject_erasure(policies.policy_version))

    assert outcome.resolved, outcome.message
    assert f"erasure request {world.request.id}: 1 records erased; 1 archive keys destroyed" == outcome.message
    held = rows_of(pg_database, "meal_plans")[world.plans["ann-held"]]
    assert held["email"] == f"erased-by-request-{world.request.id}@erased.invalid" and held["pdf_blob_key"] is None
    assert blob_store_from_url(stores.settings().resolved_blob_url()).get("plans/ann-held.pdf") is None
    # Archived just before, under a new key of the subject's, which the retry destroyed too.
    assert world.archived_pdf(world.plans["ann-held"]) is None
    assert queue.get(item.id).status == "resolved"
    with pg_database.engine.connect() as connection:
        actions = connection.execute(sa.select(schema.audit_log.c.action).where(
            schema.audit_log.c.record_id == world.plans["ann-held"])).scalars().all()
    assert actions.count("erased") == 1
