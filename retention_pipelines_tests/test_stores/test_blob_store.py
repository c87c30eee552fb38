"""The app's object storage (moto's S3 server and a folder) and cold archive copies, whole and streamed."""

from __future__ import annotations

import base64
import hashlib
import random
import tempfile
import uuid
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from hypothesis import given, settings
from hypothesis import strategies as st

from retention_pipelines.stores import StoreUnavailable, archive_store_from_url, blob_store_from_url
from retention_pipelines.stores.archive import S3ArchiveStore
from retention_pipelines.stores.blob import CHANGED, KEY_OUTSIDE, LocalBlobStore, S3BlobStore
from retention_pipelines.stores.files import KeyOutsideStore
from retention_pipelines.stores.s3 import PART_BYTES, S3_POOL_CONNECTIONS, Written, s3_client
from retention_pipelines_tests.support.hostile_keys import Sandbox, encoded_keys, legitimate_keys, refused_keys
from retention_pipelines_tests.support.s3 import DigestlessS3, MisstoringS3


class CountingS3:
    def __init__(self):
        self.client, self.requests = boto3.client("s3"), []

    def __getattr__(self, name):
        return getattr(self.client, name)

    def delete_objects(self, Bucket, Delete):
        self.requests.append(len(Delete["Objects"]))
        return self.client.delete_objects(Bucket=Bucket, Delete=Delete)


@pytest.fixture
def bucket(s3_env) -> str:
    name = f"blobs-{uuid.uuid4().hex[:10]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


def test_s3_deletes_in_requests_of_at_most_1000_keys(bucket):
    client = CountingS3()
    client.put_object(Bucket=bucket, Key="p/present.pdf", Body=b"pdf")
    keys = ["p/present.pdf"] + [f"p/gone-{i}.pdf" for i in range(1500)]  # already gone: a success
    assert S3BlobStore(bucket, "", client=client).delete_many(keys) == {}
    assert client.requests == [1000, 501]
    assert S3BlobStore(bucket, "").get("p/present.pdf") is None


def test_get_tells_a_missing_object_from_an_unreachable_store(bucket, monkeypatch):
    store = S3BlobStore(bucket, "plans")
    boto3.client("s3").put_object(Bucket=bucket, Key="plans/a.pdf", Body=b"A")
    assert store.get("a.pdf") == b"A" and store.get("b.pdf") is None
    assert store.uri("a.pdf") == f"s3://{bucket}/plans/a.pdf"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(StoreUnavailable, match="blob store"):
        S3BlobStore(bucket, "", attempts=1).get("a.pdf")


def test_local_blob_store(tmp_path):
    (tmp_path / "plans").mkdir()
    (tmp_path / "plans" / "a.pdf").write_bytes(b"A")
    store = blob_store_from_url(tmp_path.as_uri())
    assert isinstance(store, LocalBlobStore)
    assert store.get("plans/a.pdf") == b"A" and store.get("plans/b.pdf") is None
    assert store.delete_many(["plans/a.pdf", "plans/b.pdf"]) == {}
    assert not (tmp_path / "plans" / "a.pdf").exists()
    with pytest.raises(StoreUnavailable, match="RETENTION_BLOB_URL"):
        blob_store_from_url("ftp://somewhere/x")


@pytest.mark.parametrize("kind", ["s3", "folder"])
def test_a_delete_with_versions_takes_only_the_version_read(kind, request, tmp_path):
    """S3 deletes conditionally (DeleteObjects with each object's ETag); a folder compares the
    contents just before the unlink. A rewritten object stays; one already gone is a success."""
    if kind == "s3":
        store = S3BlobStore(request.getfixturevalue("bucket"), "plans", client=CountingS3())
    else:
        store = LocalBlobStore(tmp_path)
    for key in ("same.pdf", "rewritten.pdf", "gone.pdf"):
        store.put(key, b"first " + key.encode())
    read = {key: store.read(key) for key in ("same.pdf", "rewritten.pdf", "gone.pdf")}
    assert all(blob.version == store.version(key) and blob.data == store.get(key) for key, blob in read.items())
    store.put("rewritten.pdf", b"second")
    store.delete_many(["gone.pdf"])
    assert store.version("gone.pdf") is None and store.read("gone.pdf") is None

    failed = store.delete_many(list(read), {key: blob.version for key, blob in read.items()})

    assert failed == {"rewritten.pdf": CHANGED}
    assert set(store.keys()) == {"rewritten.pdf"} and store.get("rewritten.pdf") == b"second"
    if kind == "s3":
        assert store.client.requests == [1, 3]  # one request, every object conditional, no retry


@pytest.mark.parametrize("storage_class", [None, "GLACIER"])
def test_a_cold_copy_is_verified_without_reading_it(s3_archive_url, storage_class):
    store = archive_store_from_url(s3_archive_url, storage_class)
    store.put_cold("meal_plans/blobs/x", b"the plan")
    assert store.holds("meal_plans/blobs/x", b"the plan")
    assert not store.holds("meal_plans/blobs/x", b"another plan")
    assert not store.holds("meal_plans/blobs/never-written", b"the plan")


def test_a_local_cold_copy_is_verified(local_archive_url):
    store = archive_store_from_url(local_archive_url)
    store.put_cold("meal_plans/blobs/x", b"the plan")
    assert store.holds("meal_plans/blobs/x", b"the plan") and not store.holds("meal_plans/blobs/x", b"other")


def s3_archive_store(s3_archive_url: str, client, storage_class: str | None = None) -> S3ArchiveStore:
    bucket, prefix = s3_archive_url.removeprefix("s3://").split("/", 1)
    return S3ArchiveStore(bucket, prefix, storage_class, client=client)


@pytest.mark.parametrize("storage_class", [None, "GLACIER"])
def test_a_cold_copy_is_verified_from_the_answer_to_its_put(s3_archive_url, storage_class):
    client = MisstoringS3(bad_endings=("/bad",))
    store = s3_archive_store(s3_archive_url, client, storage_class)
    assert store.put_cold_verified("meal_plans/blobs/good", b"the plan")
    assert not store.put_cold_verified("meal_plans/blobs/bad", b"the plan")  # the store kept other bytes
    assert client.heads == 0  # no HEAD after the PUT: its answer told
    assert store.holds("meal_plans/blobs/good", b"the plan") and not store.holds("meal_plans/blobs/bad", b"the plan")


def test_a_put_answer_without_a_digest_is_verified_by_asking_the_store(s3_archive_url):
    client = DigestlessS3(bad_endings=("/bad",))
    store = s3_archive_store(s3_archive_url, client)
    assert store.put_cold_verified("meal_plans/blobs/good", b"the plan")
    assert not store.put_cold_verified("meal_plans/blobs/bad", b"the plan")
    assert client.heads == 2


def test_the_stores_take_as_many_requests_at_once_as_their_client_has_connections(bucket, s3_archive_url):
    assert S3BlobStore(bucket, "").max_parallel_requests == S3_POOL_CONNECTIONS
    assert s3_archive_store(s3_archive_url, s3_client()).max_parallel_requests == S3_POOL_CONNECTIONS
    small = boto3.client("s3", config=Config(max_pool_connections=3))  # a caller's own client keeps its pool
    assert S3BlobStore(bucket, "", client=small).max_parallel_requests == 3


# Containment: a file:// blob store never reads, writes, lists or deletes outside its folder ------
HOSTILE = settings(max_examples=80, deadline=None)


@HOSTILE
@given(data=st.data())
def test_a_local_blob_store_refuses_every_key_that_leads_out_and_touches_nothing_outside(data):
    with tempfile.TemporaryDirectory() as folder:
        sandbox = Sandbox.build(Path(folder))
        store = LocalBlobStore(sandbox.root)
        key = data.draw(refused_keys(sandbox), label="key")
        with sandbox.watching():
            with pytest.raises(KeyOutsideStore):
                store.get(key)
            with pytest.raises(KeyOutsideStore):
                store.put(key, b"written through a hostile key")
            assert store.delete_many([key, "inside.pdf"]) == {key: KEY_OUTSIDE}
            listed = set(store.keys())
        assert listed == set()  # inside.pdf went; the links that lead out are no objects of the store


@HOSTILE
@given(data=st.data())
def test_a_local_blob_store_keeps_legitimate_and_literal_keys_inside_its_folder(data):
    with tempfile.TemporaryDirectory() as folder:
        sandbox = Sandbox.build(Path(folder))
        store = LocalBlobStore(sandbox.root)
        key = data.draw(st.one_of(legitimate_keys(), encoded_keys()), label="key")
        with sandbox.watching():
            assert store.get(key) is None
            store.put(key, b"%PDF " + key.encode())
            assert store.get(key) == b"%PDF " + key.encode()
            listed = set(store.keys())
        assert key in listed and (sandbox.root / key).read_bytes() == b"%PDF " + key.encode()
        with sandbox.watching():
            assert store.delete_many([key]) == {}
        assert not (sandbox.root / key).exists() and (sandbox.root / "inside.pdf").exists()


def test_a_link_that_stays_inside_is_followed_and_a_delete_removes_the_link_not_its_target(tmp_path):
    sandbox = Sandbox.build(tmp_path)
    store = LocalBlobStore(sandbox.root)
    (sandbox.root / "pdf_link").symlink_to("inside.pdf")
    with sandbox.watching():
        store.put("alias/a.pdf", b"A")  # alias -> plans, inside the store
        assert store.get("plans/a.pdf") == b"A" and store.get("pdf_link") == b"%PDF inside"
        assert store.delete_many(["pdf_link", "alias/a.pdf"]) == {}
    assert not (sandbox.root / "pdf_link").is_symlink() and (sandbox.root / "inside.pdf").exists()
    assert not (sandbox.root / "plans" / "a.pdf").exists()


def test_a_blob_folder_reached_through_a_link_is_the_store(tmp_path):
    """The root itself may be a link (/tmp → /private/tmp): containment is judged on resolved paths."""
    (tmp_path / "real").mkdir()
    (tmp_path / "via").symlink_to(tmp_path / "real")
    store = LocalBlobStore(tmp_path / "via")
    store.put("plans/x.pdf", b"X")
    assert (tmp_path / "real" / "plans" / "x.pdf").read_bytes() == b"X"
    assert list(store.keys()) == ["plans/x.pdf"] and store.get("plans/x.pdf") == b"X"
    with pytest.raises(KeyOutsideStore, match="relative path of plain names"):
        store.get("../real/plans/x.pdf")


# streamed copies (a PDF of any size) ---------------------------------------------------------------------
LARGE = random.Random(9).randbytes(PART_BYTES + 1024 * 1024 + 3)  # two parts


def pieces(data: bytes, size: int = 1024 * 1024, fail_after: int | None = None):
    """The data in pieces, as a stream hands them over; with fail_after, the stream breaks there."""
    for index, start in enumerate(range(0, len(data), size)):
        if fail_after is not None and index == fail_after:
            raise StoreUnavailable("the source broke off")
        yield data[start:start + size]


def multipart_uploads(s3_archive_url: str) -> list:
    bucket = s3_archive_url.removeprefix("s3://").split("/", 1)[0]
    return boto3.client("s3").list_multipart_uploads(Bucket=bucket).get("Uploads", [])


@pytest.mark.parametrize("kind", ["s3", "folder"])
@pytest.mark.parametrize("data", [b"", b"the plan", LARGE], ids=["empty", "one part", "two parts"])
def test_a_streamed_cold_copy_is_written_verified_and_read_back_a_chunk_at_a_time(kind, data, s3_archive_url,
                                                                               local_archive_url):
    store = archive_store_from_url(s3_archive_url if kind == "s3" else local_archive_url, "GLACIER"
                                   if kind == "s3" else None)
    digest = hashlib.sha256(data).hexdigest()
    assert store.put_cold_streamed("meal_plans/blobs/x", pieces(data)) == digest
    if kind == "s3":  # in a class that cannot be read back: verified by S3's own digest
        head = boto3.client("s3").head_object(Bucket=store.bucket, Key=f"{store.prefix}/meal_plans/blobs/x")
        assert head["StorageClass"] == "GLACIER" and head["ETag"].strip('"').endswith("-2") == (data == LARGE)
        assert multipart_uploads(s3_archive_url) == []
    else:
        assert store.stored_sha256("meal_plans/blobs/x") == digest
        assert b"".join(store.chunks("meal_plans/blobs/x")) == data
        assert all(len(chunk) <= 1024 * 1024 for chunk in store.chunks("meal_plans/blobs/x"))


@pytest.mark.parametrize("kind", ["s3", "folder"])
def test_a_streamed_copy_that_breaks_off_leaves_the_key_as_it_was(kind, s3_archive_url, local_archive_url):
    store = archive_store_from_url(s3_archive_url if kind == "s3" else local_archive_url)
    store.put_cold("meal_plans/blobs/x", b"the copy before")
    for fail_after in (0, 9):  # before anything is sent; after the first part
        with pytest.raises(StoreUnavailable, match="broke off"):
            store.put_cold_streamed("meal_plans/blobs/x", pieces(LARGE, fail_after=fail_after))
        assert store.get("meal_plans/blobs/x") == b"the copy before"
    if kind == "s3":
        assert multipart_uploads(s3_archive_url) == []  # the upload was aborted, its parts gone
    else:
        assert [p.name for p in store.root.rglob(".partial-*")] == []


def test_a_multipart_copy_is_verified_from_s3s_digest_of_its_parts(s3_archive_url):
    """Each part's SHA-256 goes with it; the answer's digest is of the parts' digests (the ETag, an
    MD5 of their MD5s, where there is no checksum): a part changed on the way is caught, and an
    answer without a digest is verified by asking the store (its checksum of the parts')."""
    client = MisstoringS3(bad_endings=("/bad",))
    store = s3_archive_store(s3_archive_url, client, "GLACIER")
    assert store.put_cold_streamed("meal_plans/blobs/good", pieces(LARGE)) == hashlib.sha256(LARGE).hexdigest()
    assert store.put_cold_streamed("meal_plans/blobs/bad", pieces(LARGE)) is None
    assert client.heads == 0
    digestless = DigestlessS3(bad_endings=("/bad",))
    store = s3_archive_store(s3_archive_url, digestless, "GLACIER")
    assert store.put_cold_streamed("meal_plans/blobs/good", pieces(LARGE)) == hashlib.sha256(LARGE).hexdigest()
    assert store.put_cold_streamed("meal_plans/blobs/bad", pieces(LARGE)) is None
    assert digestless.heads == 2


@pytest.mark.parametrize("kind", ["s3", "folder"])
def test_a_blob_is_opened_and_written_a_chunk_at_a_time_whole_or_not_at_all(kind, bucket, tmp_path):
    store = S3BlobStore(bucket, "plans") if kind == "s3" else LocalBlobStore(tmp_path / "blobs")
    assert store.open("large.pdf") is None
    store.put_streamed("large.pdf", pieces(LARGE))
    opened = store.open("large.pdf")
    assert opened.size == len(LARGE)
    read = [chunk for chunk in opened]
    assert b"".join(read) == LARGE and max(len(chunk) for chunk in read) <= 1024 * 1024
    assert opened.version == store.version("large.pdf") == store.read("large.pdf").version

    with pytest.raises(StoreUnavailable, match="broke off"):
        store.put_streamed("large.pdf", pieces(b"another plan" * 1_000_000, fail_after=9))
    assert store.get("large.pdf") == LARGE
    half_read = store.open("large.pdf")
    next(iter(half_read))
    half_read.close()  # its file or connection let go of
    if kind == "s3":
        assert boto3.client("s3").list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    else:
        assert [p.name for p in (tmp_path / "blobs").rglob(".partial-*")] == []


def test_s3s_digest_of_parts_is_read_with_or_without_their_count_and_never_for_another_object():
    parts = [b"a" * 10, b"b" * 3]
    written = Written(sha256=hashlib.sha256(b"".join(parts)).hexdigest(), size=13,
                      parts=[(hashlib.sha256(p).digest(), hashlib.md5(p).digest()) for p in parts])  # noqa: S324
    composite = base64.b64encode(hashlib.sha256(b"".join(sha for sha, _ in written.parts)).digest()).decode()
    etag = hashlib.md5(b"".join(md5 for _, md5 in written.parts)).hexdigest()  # noqa: S324
    assert written.matches({"ChecksumSHA256": f"{composite}-2"}) and written.matches({"ChecksumSHA256": composite})
    assert written.matches({"ETag": f'"{etag}-2"'})
    assert not written.matches({"ChecksumSHA256": f"{composite}-3"}) and not written.matches({"ETag": f'"{etag}-3"'})
    whole_digest = base64.b64encode(bytes.fromhex(written.sha256)).decode()
    assert not written.matches({"ChecksumSHA256": whole_digest})  # a digest of the whole is no digest of parts
    assert written.matches({}) is None
