"""The requests-for-erasure asset: its figures, and the check that fails for a request past due;
the sensor that keeps a breach open while one is."""

import json
from datetime import timedelta

import dagster as dg
import sqlalchemy as sa

from retention_pipelines import schema
from retention_pipelines.dagster_wiring.erasure import (
    ERASURE_OVERDUE,
    NO_REQUEST_PAST_DUE_CHECK,
    REQUESTS_KEY,
    build_erasure_defs,
)
from retention_pipelines.dagster_wiring.resources import RetentionStores
from retention_pipelines.engine.gdpr.requests import ErasureRequests
from retention_pipelines.engine.oversight.sla import Breaches

KEY = b"test-key-0123456789"


def materialize(pg_url, local_archive_url):
    defs = build_erasure_defs()
    [asset] = [a for a in defs.assets if a.key == REQUESTS_KEY]
    result = dg.materialize([asset], resources={"retention_stores": RetentionStores(
        database_url=pg_url, archive_url=local_archive_url)}, raise_on_error=False)
    [materialization] = result.asset_materializations_for_node(asset.op.name)
    [check] = result.get_asset_check_evaluations()
    return {k: v.value for k, v in materialization.metadata.items()}, check


def test_a_request_past_due_fails_the_check_naming_its_id_only(pg_url, pg_database, local_archive_url):
    requests = ErasureRequests(pg_database, KEY)
    late = requests.request("late.subject@example.com")
    requests.request("on.time@example.com")
    done = requests.request("done.subject@example.com")
    requests.complete(done.id, "erased from 4 domains")
    with pg_database.engine.begin() as connection:
        connection.execute(sa.update(schema.erasure_requests).where(schema.erasure_requests.c.id == late.id)
                           .values(due_at=sa.func.now() - sa.text("interval '2 days'")))

    metadata, check = materialize(pg_url, local_archive_url)
    assert (metadata["open"], metadata["completed"], metadata["past_due"]) == (2, 1, 1)
    assert metadata["nearest_deadline_days_left"] < 0
    assert check.check_name == NO_REQUEST_PAST_DUE_CHECK and not check.passed
    assert check.severity == dg.AssetCheckSeverity.ERROR
    assert check.metadata["past_due_request_ids"].value == [late.id]
    assert "@" not in repr(metadata) + repr(check.metadata)


def test_no_request_past_due_passes(pg_url, pg_database, local_archive_url):
    ErasureRequests(pg_database, KEY, timedelta(days=30)).request("someone@example.com")
    metadata, check = materialize(pg_url, local_archive_url)
    assert check.passed and metadata["past_due"] == 0 and 29.9 < metadata["nearest_deadline_days_left"] <= 30


def tick(pg_url, local_archive_url, receiver, instance):
    stores = RetentionStores(database_url=pg_url, archive_url=local_archive_url, alert_webhook_url=receiver.url)
    defs = build_erasure_defs()
    [sensor] = defs.sensors
    with dg.build_sensor_context(instance=instance, resources={"retention_stores": stores},
                                 definitions=dg.Definitions.merge(defs, dg.Definitions(
                                     resources={"retention_stores": stores}))) as context:
        return sensor.evaluate_tick(context)


def test_a_request_past_due_opens_one_breach_that_closes_when_it_completes(
        pg_url, pg_database, local_archive_url, receiver, tmp_path):
    requests = ErasureRequests(pg_database, KEY)
    late = requests.request("late.subject@example.com")
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        assert tick(pg_url, local_archive_url, receiver, instance).run_requests == []
        assert Breaches(pg_database).all() == [] and receiver.received == []

        with pg_database.engine.begin() as connection:  # the request was received 31 days ago
            connection.execute(sa.update(schema.erasure_requests).where(schema.erasure_requests.c.id == late.id).values(
                received_at=sa.func.now() - sa.text("interval '31 days'"),
                due_at=sa.func.now() - sa.text("interval '1 day'")))
        for _ in range(3):
            tick(pg_url, local_archive_url, receiver, instance)
        [breach] = Breaches(pg_database).all()
        assert (breach["domain"], breach["kind"], breach["closed_at"]) == ("gdpr", ERASURE_OVERDUE, None)
        assert [(a["kind"], a["event"]) for a in receiver.received] == [(ERASURE_OVERDUE, "opened")]
        assert receiver.received[0]["details"]["past_due_request_ids"] == [late.id]

        requests.complete(late.id, "erased from 4 domains")
        tick(pg_url, local_archive_url, receiver, instance)
        [breach] = Breaches(pg_database).all()
        assert breach["closed_at"] is not None
        assert [a["event"] for a in receiver.received] == ["opened", "closed"]
        assert "@" not in json.dumps(receiver.received)
