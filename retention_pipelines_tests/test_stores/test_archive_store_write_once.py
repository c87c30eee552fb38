"""Write-once puts (`put_new`, the audit anchors'): the first object under a key stays, whatever
is put after it, in a folder and in S3 (If-None-Match: *), with or without Object Lock; and the
setting of how long anchors are locked."""

from __future__ import annotations

import tempfile
import threading
import uuid
from pathlib import Path

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retention_pipelines.stores import ConfigurationError, archive_store_from_url, load_settings
from retention_pipelines.stores.archive import LocalArchiveStore, ObjectExists
from retention_pipelines.stores.settings import AUDIT_ANCHOR_KEEP_DAYS

KEYS = st.sampled_from(["audit_anchors/a.json", "audit_anchors/b.json", "audit_anchors/2026/01/01/c.json"])
PUTS = st.lists(st.tuples(KEYS, st.binary(min_size=0, max_size=64)), min_size=1, max_size=12)


def put_all(store, puts: list[tuple[str, bytes]]) -> dict[str, bytes]:
    """Every put in turn; what each key must hold: its first put's bytes. A later put is refused."""
    first: dict[str, bytes] = {}
    for key, data in puts:
        if key in first:
            with pytest.raises(ObjectExists):
                store.put_new(key, data)
        else:
            store.put_new(key, data)
            first[key] = data
    return first


@settings(max_examples=60, deadline=None)
@given(puts=PUTS)
def test_a_folder_keeps_the_first_object_put_under_each_key(puts):
    with tempfile.TemporaryDirectory() as folder:
        store = LocalArchiveStore(Path(folder))
        first = put_all(store, puts)
        assert {key: store.get(key) for key in store.keys("")} == first
        assert not [path for path in Path(folder).rglob(".partial-*")]  # no draft left behind


# s3_env only points boto3 at the server: the same for every example, which gets a bucket of its own.
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(puts=PUTS, locked=st.booleans())
def test_s3_keeps_the_first_object_put_under_each_key(puts, locked, s3_env):
    bucket = f"write-once-{uuid.uuid4().hex[:10]}"
    boto3.client("s3").create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=locked)
    store = archive_store_from_url(f"s3://{bucket}/retention")
    first = put_all(store, puts)
    assert {key: store.get(key) for key in store.keys("")} == first
    assert store.keys_written_over("") == set()


def test_of_writers_racing_for_one_key_one_wins_and_its_object_is_whole(tmp_path):
    store = LocalArchiveStore(tmp_path)
    won, lost = [], []

    def write(n: int) -> None:
        try:
            store.put_new("audit_anchors/race.json", bytes([n]) * 100_000)
            won.append(n)
        except ObjectExists:
            lost.append(n)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1 and len(lost) == 7
    assert store.get("audit_anchors/race.json") == bytes(won) * 100_000


def test_anchors_are_locked_ten_years_unless_set(monkeypatch):
    monkeypatch.setenv("RETENTION_ENV", "demo")
    monkeypatch.delenv("RETENTION_AUDIT_ANCHOR_KEEP_DAYS", raising=False)
    assert load_settings().audit_anchor_keep_days == AUDIT_ANCHOR_KEEP_DAYS == 3653
    monkeypatch.setenv("RETENTION_AUDIT_ANCHOR_KEEP_DAYS", "4000")
    assert load_settings().audit_anchor_keep_days == 4000


@pytest.mark.parametrize("value", ["0", "36526", "ten years", "nan"])
def test_an_anchor_keep_days_out_of_range_is_refused_by_name(monkeypatch, value):
    monkeypatch.setenv("RETENTION_ENV", "demo")
    monkeypatch.setenv("RETENTION_AUDIT_ANCHOR_KEEP_DAYS", value)
    with pytest.raises(ConfigurationError) as refused:
        load_settings()
    assert "RETENTION_AUDIT_ANCHOR_KEEP_DAYS: must be a whole number from 1 to 36525 days" in str(refused.value)
