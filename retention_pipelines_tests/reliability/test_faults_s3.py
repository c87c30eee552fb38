"""Faults: the object store goes down in the middle of an archiving run.

The outage is the moto S3 server's endpoint going down (faults.EndpointOutage: connections refused
and cut), at an exact request of the run: the run's own boto3 client, real, takes the endpoint down
just before its Nth request. The moto server keeps running behind the endpoint, because it keeps
its objects in memory only: stopping its process would throw away the very archive whose
completeness the test checks. The session's server is only fronted, never stopped.
"""

from __future__ import annotations

from urllib.parse import urlparse

import pytest

from retention_pipelines.engine import RetentionEngine
from retention_pipelines.stores import archive_store_from_url
from retention_pipelines.stores.archive import S3ArchiveStore
from retention_pipelines.stores.s3 import s3_client
from retention_pipelines_tests.support.app_rows import bulk_insert_pg, remaining_ids
from retention_pipelines_tests.support.archives import configured_keys
from retention_pipelines_tests.support.faults import (
    EndpointOutage,
    clear_failure,
    fixed_batches,
    loss,
    outcome,
    rerun_outcome,
)
from retention_pipelines_tests.support.figures import record

DUE, BATCH = 1000, 50
BATCHES = DUE // BATCH


class DownAtRequest:
    """A real boto3 client that takes the endpoint down just before its `at`-th call of `method`
    (or, `mid_answer`, while that call's answer is on its way)."""

    def __init__(self, client, outage: EndpointOutage, method: str, at: int, mid_answer: bool = False):
        self.client, self.outage, self.method, self.at, self.mid_answer, self.calls = (
            client, outage, method, at, mid_answer, 0)

    def __getattr__(self, name):
        call = getattr(self.client, name)
        if name != self.method:
            return call

        def counted(**kwargs):
            self.calls += 1
            if self.calls == self.at:
                self.outage.down_mid_answer() if self.mid_answer else self.outage.down()
            return call(**kwargs)
        return counted


@pytest.fixture
def outage(s3_env, monkeypatch):
    relay = EndpointOutage(s3_env.port)
    monkeypatch.setenv("AWS_ENDPOINT_URL", relay.endpoint)
    yield relay
    relay.down()


# The archive step writes two objects per batch (data, manifest) and reads both back; the delete
# step reads both back once more before each batch. Down at the 8th PUT: three batches archived,
# none deleted; as the 7th GET's object is on its way (one batch at a time, so that the cut
# answer is that GET's); at the GET after every batch's archive and three batches' deletes.
CASES = [
    pytest.param("archiving", "put_object", 8, False, id="while-archiving"),
    pytest.param("an object is read back", "get_object", 7, True, id="mid-answer"),
    pytest.param("deleting", "get_object", 2 * BATCHES + 2 * 3 + 1, False, id="while-deleting"),
]


@pytest.mark.parametrize(("phase", "method", "at", "mid_answer"), CASES)
def test_object_store_down_mid_run(pg_database, policies, quiz_policy, s3_archive_url, outage, phase, method, at,
                                   mid_answer):
    """The run fails naming the archive store (its s3:// URI), or succeeds; every row gone is
    audited once and sits in a verified object; once the store is back a rerun finishes the job."""
    bulk_insert_pg(pg_database, DUE, "2 days")
    inserted = remaining_ids(pg_database)
    policy = fixed_batches(quiz_policy, BATCH, archive=True, parallel_batches=1 if mid_answer else None)
    parsed = urlparse(s3_archive_url)
    client = DownAtRequest(s3_client(), outage, method, at, mid_answer)
    store = S3ArchiveStore(parsed.netloc, parsed.path, client=client)
    engine = RetentionEngine(policy, policies.policy_version, pg_database, store, keys=configured_keys(pg_database))

    message = outcome(lambda: engine.run("store-down"))
    outage.up()
    deleted = len(inserted - remaining_ids(pg_database))
    lost = loss(pg_database, inserted, s3_archive_url)
    rerun = rerun_outcome(RetentionEngine(policy, policies.policy_version, pg_database,
                                          archive_store_from_url(s3_archive_url), keys=configured_keys(pg_database)),
                          pg_database, inserted, s3_archive_url)
    clear = message is None or clear_failure(message, f"s3://{parsed.netloc}")
    record(f"faults: S3 down while {phase}", "0 lost, failure names the archive store",
           f"{'0 lost' if lost is None else 'LOSS'} ({deleted} deleted before); "
           f"{'failed: ' + message[:90] if message else 'succeeded'}; "
           f"rerun {'finished' if rerun is None else 'FAILED'}",
           lost is None and clear and rerun is None)
    assert client.calls >= at, "the outage never happened: the run made fewer requests"
    assert lost is None, lost
    assert clear, f"the failure does not name the archive store in one clean line: {message!r}"
    if at < 2 * BATCHES:  # every object is verified before the first delete
        assert message is not None and deleted == 0
    assert rerun is None, rerun
