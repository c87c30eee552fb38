"""Archive stores: a folder and S3 (moto server) round trips, and clear refusals."""

from __future__ import annotations

import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

import boto3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retention_pipelines.stores import StoreUnavailable, archive_store_from_url
from retention_pipelines.stores.archive import LocalArchiveStore, S3ArchiveStore
from retention_pipelines.stores.files import KeyOutsideStore
from retention_pipelines_tests.support.hostile_keys import SECRET, Sandbox, encoded_keys, legitimate_keys, refused_keys
from retention_pipelines_tests.support.servers import free_port

KEY = "quiz_responses/2026/11/29/0123456789abcdef.jsonl.gz"
DATA = b"\x1f\x8b" + bytes(range(256)) * 4


def test_local_store_round_trip(tmp_path):
    store = archive_store_from_url((tmp_path / "archive").as_uri())
    assert isinstance(store, LocalArchiveStore)
    assert not store.exists(KEY)
    store.put(KEY, DATA)
    assert store.exists(KEY)
    assert store.get(KEY) == DATA
    uri = store.uri(KEY)
    assert uri.startswith("file:///") and uri.endswith(KEY)
    assert Path(unquote(urlparse(uri).path)).read_bytes() == DATA
    store.put(KEY, b"second version")
    assert store.get(KEY) == b"second version"
    leftovers = [p.name for p in (tmp_path / "archive").rglob("*") if p.name.startswith(".partial-")]
    assert leftovers == []


def test_local_store_missing_object_and_unwritable_folder(tmp_path):
    store = LocalArchiveStore(tmp_path / "archive")
    with pytest.raises(StoreUnavailable, match="cannot be read") as missing:
        store.get("nope/missing.jsonl.gz")
    assert "nope/missing.jsonl.gz" in str(missing.value)
    (tmp_path / "a-file").write_bytes(b"")
    blocked = LocalArchiveStore(tmp_path / "a-file")  # a file where the folder should be
    with pytest.raises(StoreUnavailable, match="cannot be written"):
        blocked.put(KEY, DATA)


def test_s3_store_round_trip(s3_archive_url):
    store = archive_store_from_url(s3_archive_url)
    assert isinstance(store, S3ArchiveStore)
    bucket = urlparse(s3_archive_url).netloc
    assert not store.exists(KEY)
    store.put(KEY, DATA)
    assert store.exists(KEY)
    assert store.get(KEY) == DATA
    assert store.uri(KEY) == f"s3://{bucket}/retention/{KEY}"
    # The object really is in the bucket, under the prefix.
    assert boto3.client("s3").get_object(Bucket=bucket, Key=f"retention/{KEY}")["Body"].read() == DATA
    store.put(KEY, b"second version")
    assert store.get(KEY) == b"second version"


def test_s3_missing_object_is_told_by_exists_and_get(s3_archive_url):
    store = archive_store_from_url(s3_archive_url)
    assert store.exists("nope/missing") is False
    with pytest.raises(StoreUnavailable) as missing:
        store.get("nope/missing")
    assert "s3://" in str(missing.value) and "nope/missing" in str(missing.value)


def test_s3_bucket_that_does_not_exist(s3_env):
    store = archive_store_from_url("s3://no-such-bucket-for-retention/prefix")
    with pytest.raises(StoreUnavailable) as unavailable:
        store.put(KEY, DATA)
    message = str(unavailable.value)
    assert "s3://no-such-bucket-for-retention/prefix/" in message
    assert "NoSuchBucket" in message
    with pytest.raises(StoreUnavailable, match="no-such-bucket-for-retention"):
        store.get(KEY)


def test_s3_endpoint_with_nothing_listening(s3_env, monkeypatch):
    port = free_port()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    store = archive_store_from_url("s3://archive-bucket/prefix")
    with pytest.raises(StoreUnavailable) as unavailable:
        store.put(KEY, DATA)
    message = str(unavailable.value)
    assert "unreachable" in message
    assert "s3://archive-bucket/prefix" in message
    assert f"127.0.0.1:{port}" in message
    assert "testing" not in message  # no credential


@pytest.mark.parametrize("url, shown", [("ftp://x", "ftp://x"), ("s3:///no-bucket", "s3:///…"), ("file:", "…"),
                                        ("/plain/path", "…")])
def test_archive_store_from_url_refuses_other_urls(url, shown):
    with pytest.raises(StoreUnavailable) as refused:
        archive_store_from_url(url)
    assert f"RETENTION_ARCHIVE_URL {shown} is neither" in str(refused.value)  # as every URL setting is shown
    assert "s3://bucket/prefix" in str(refused.value) and "file:///folder" in str(refused.value)


# Containment: a file:// archive store never reads, writes, lists or deletes outside its folder ---
HOSTILE = settings(max_examples=80, deadline=None)


def listed(store: LocalArchiveStore, prefix: str) -> set[str]:
    """The keys listed under `prefix`; a prefix that leads out is refused like a key."""
    try:
        return {key for key, _ in store.objects(prefix)}
    except KeyOutsideStore:
        return set()


@HOSTILE
@given(data=st.data())
def test_a_local_archive_store_refuses_every_key_that_leads_out_and_touches_nothing_outside(data):
    with tempfile.TemporaryDirectory() as folder:
        sandbox = Sandbox.build(Path(folder))
        store = LocalArchiveStore(sandbox.root)
        key = data.draw(refused_keys(sandbox), label="key")
        with sandbox.watching():
            for operation in (store.get, store.exists, store.delete, lambda k: store.put(k, DATA),
                              lambda k: store.put_cold(k, DATA), lambda k: store.put_new(k, DATA)):
                with pytest.raises(KeyOutsideStore):
                    operation(key)
            assert not store.holds(key, SECRET)
            assert listed(store, key) <= {"inside.pdf"}
            assert set(store.keys("")) == {"inside.pdf"}  # the links that lead out are no objects of the store


@HOSTILE
@given(data=st.data())
def test_a_local_archive_store_keeps_legitimate_and_literal_keys_inside_its_folder(data):
    with tempfile.TemporaryDirectory() as folder:
        sandbox = Sandbox.build(Path(folder))
        store = LocalArchiveStore(sandbox.root)
        key = data.draw(st.one_of(legitimate_keys(), encoded_keys()), label="key")
        with sandbox.watching():
            assert not store.exists(key)
            store.put(key, DATA)
            assert store.exists(key) and store.get(key) == DATA and store.holds(key, DATA)
            assert key in listed(store, key) and key in set(store.keys(""))
        assert (sandbox.root / key).read_bytes() == DATA
        with sandbox.watching():
            store.delete(key)
            assert not store.exists(key)
        assert not (sandbox.root / key).exists() and (sandbox.root / "inside.pdf").exists()
