"""Archive stores: where archived batches go. S3 (or S3-compatible) in production, a folder for the demo."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote, urlparse

from retention_pipelines.errors import StoreUnavailable
from retention_pipelines.redaction import display_url
from retention_pipelines.stores.files import (
    DRAFT_PREFIX,
    READ_CHUNK_BYTES,
    inside,
    read_chunks,
    write_streamed,
    write_whole,
)
from retention_pipelines.stores.s3 import (
    PART_BUFFER_BYTES,
    Written,
    pool_connections,
    put_streamed,
    read_streamed,
    s3_client,
)


class DeleteRefused(StoreUnavailable):
    """The store would not delete an object: an Object Lock or legal hold on it, or a permission."""


class ObjectExists(StoreUnavailable):
    """A write-once put found an object under its key already; the object was left as it was."""


@dataclass(frozen=True)
class ObjectLock:
    """An S3 Object Lock on an object: its mode and retain-until date, and whether a legal hold is on."""

    mode: str | None
    retain_until: datetime | None
    legal_hold: bool

    def in_force(self, now: datetime) -> bool:
        """Whether the store refuses to delete the object at `now`."""
        return self.legal_hold or (self.retain_until is not None and self.retain_until > now)


class ArchiveStore(ABC):
    """Keys are relative paths ('email_blacklist/2026/11/29/<hmac>.jsonl.enc'); URIs are absolute."""

    @abstractmethod
    def put(self, key: str, data: bytes, retain_until: datetime | None = None) -> None:
        """Write the object durably; a reader that sees it sees all of it. retain_until: the
        Object Lock date, where the store has Object Lock configured (see `retain_until`)."""

    @abstractmethod
    def get(self, key: str) -> bytes: ...

    @abstractmethod
    def chunks(self, key: str) -> Iterator[bytes]:
        """The object's bytes, a chunk at a time (an archived PDF of any size is read this way)."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def uri(self, key: str) -> str: ...

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove an object for good (the health probe's, and archives past their keep_for); an
        object already gone is no error. A refusal (an Object Lock) raises DeleteRefused."""

    def key_of(self, uri: str) -> str | None:
        """The key of one of this store's URIs (as in the audit log); None for another store's."""
        base = self.uri("x")[:-1]
        return uri[len(base):] if uri.startswith(base) and len(uri) > len(base) else None

    def keys(self, prefix: str) -> Iterator[str]:
        """The keys of the objects whose key starts with `prefix`, in key order."""
        return iter(sorted(key for key, _ in self.objects(prefix)))

    @abstractmethod
    def objects(self, prefix: str) -> Iterator[tuple[str, datetime]]:
        """Every object whose key starts with `prefix`, with when it was written by the store's own
        clock (UTC), in key order (within each folder, for a local store)."""

    # How many requests the store may be sent at once (the engine's object threads). A local
    # folder: enough to overlap the fsyncs, few enough for a laptop.
    max_parallel_requests = 8
    # What a streamed write holds of an object in memory at most: a folder writes each chunk as it
    # comes and reads the file back a chunk at a time.
    write_buffer_bytes = READ_CHUNK_BYTES

    def put_cold(self, key: str, data: bytes, retain_until: datetime | None = None) -> None:
        """Write an object meant to be kept, not read (a PDF): cold storage where the store has it."""
        self.put(key, data, retain_until=retain_until)

    @abstractmethod
    def put_new(self, key: str, data: bytes, retain_until: datetime | None = None) -> None:
        """put, but only where no object has the key: otherwise ObjectExists, and the object there
        stays as it was. The store decides, in one step, so that two writers cannot both win."""

    def keys_written_over(self, prefix: str) -> set[str]:
        """The keys under `prefix` that were written more than once or deleted, where the store
        keeps the versions that tell (a versioned S3 bucket); empty where it keeps none."""
        return set()

    def put_cold_verified(self, key: str, data: bytes, retain_until: datetime | None = None) -> bool:
        """put_cold, then whether the store holds exactly these bytes under the key (`holds`)."""
        self.put_cold(key, data, retain_until=retain_until)
        return self.holds(key, data)

    @abstractmethod
    def put_cold_streamed(self, key: str, chunks: Iterable[bytes], retain_until: datetime | None = None) -> str | None:
        """put_cold of an object of any size, its chunks written as they come, with a part of it in
        memory at a time; nothing under the key changes unless every chunk is written (an error
        in `chunks` included). Returns the SHA-256 (hex) of what the store holds under the key,
        verified as put_cold_verified verifies, or None when it holds other bytes than it was sent."""

    def retain_until(self, now: Callable[[], datetime], keep_for: timedelta | None) -> datetime | None:
        """The Object Lock date for an archive object of a domain written now (`now`: the database's
        clock, read only when a lock is configured): now + the domain's keep_for. None where the
        store has no Object Lock configured."""
        return None

    def lock(self, key: str) -> ObjectLock | None:
        """The object's Object Lock, if the store has such a thing and the object has one."""
        return None

    def holds(self, key: str, data: bytes) -> bool:
        """Whether the stored object is exactly these bytes."""
        return self.stored_sha256(key) == hashlib.sha256(data).hexdigest()

    def stored_sha256(self, key: str) -> str | None:
        """The SHA-256 (hex) of the object under the key, read back chunk by chunk; None when it
        cannot be read."""
        digest = hashlib.sha256()
        try:
            for chunk in self.chunks(key):
                digest.update(chunk)
        except StoreUnavailable:
            return None
        return digest.hexdigest()


class LocalArchiveStore(ArchiveStore):
    """A folder: writes go to a temporary file, fsync'd, then renamed, so a kill leaves no torn object.
    A key that would lead out of the folder is refused (KeyOutsideStore) before any file is touched."""

    def __init__(self, root: Path):
        self.root = root

    def _path(self, key: str) -> Path:
        return inside(self.root, key)

    def put(self, key: str, data: bytes, retain_until: datetime | None = None) -> None:
        # A folder has no Object Lock: retain_until is for stores that do (settings refuse a lock
        # mode with a file:// archive).
        try:
            write_whole(self._path(key), data)
        except OSError as exc:
            raise StoreUnavailable(f"archive folder {self.root} cannot be written: {exc.strerror or exc}") from None

    def put_new(self, key: str, data: bytes, retain_until: datetime | None = None) -> None:
        try:
            written = write_whole(self._path(key), data, keep_existing=True)
        except OSError as exc:
            raise StoreUnavailable(f"archive folder {self.root} cannot be written: {exc.strerror or exc}") from None
        if not written:
            raise ObjectExists(f"archive store: {self.uri(key)} exists already; it was not written over")

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except OSError as exc:
            raise StoreUnavailable(f"archive object {self.uri(key)} cannot be read: {exc.strerror or exc}") from None

    def chunks(self, key: str) -> Iterator[bytes]:
        try:
            yield from read_chunks(self._path(key))
        except OSError as exc:
            raise StoreUnavailable(f"archive object {self.uri(key)} cannot be read: {exc.strerror or exc}") from None

    def put_cold_streamed(self, key: str, chunks: Iterable[bytes], retain_until: datetime | None = None) -> str | None:
        """Written to a draft, fsync'd and put in place (a kill leaves no torn object), then read
        back from the disk: the digest of what the folder holds, compared with what was sent."""
        try:
            sent = write_streamed(self._path(key), chunks)
        except OSError as exc:
            raise StoreUnavailable(f"archive folder {self.root} cannot be written: {exc.strerror or exc}") from None
        stored = self.stored_sha256(key)
        return stored if stored == sent else None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def objects(self, prefix: str) -> Iterator[tuple[str, datetime]]:
        base = self.root.resolve()
        folder = self._path(prefix.rsplit("/", 1)[0]) if "/" in prefix else base
        yield from ((key, written) for key, written in self._walk(folder, base) if key.startswith(prefix))

    def _walk(self, folder: Path, base: Path) -> Iterator[tuple[str, datetime]]:
        """The files under `folder`, keyed relative to `base`; symbolic links are not followed."""
        try:
            entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StoreUnavailable(f"archive folder {folder} cannot be listed: {exc.strerror or exc}") from None
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                yield from self._walk(Path(entry.path), base)
            elif entry.is_file(follow_symlinks=False) and not entry.name.startswith(DRAFT_PREFIX):
                try:
                    written = datetime.fromtimestamp(entry.stat().st_mtime_ns / 1e9, UTC)
                except FileNotFoundError:  # gone since the folder was read
                    continue
                yield Path(entry.path).relative_to(base).as_posix(), written

    def uri(self, key: str) -> str:
        return (self.root / key).as_uri()  # a name only: messages about a refused key need it too


class S3ArchiveStore(ArchiveStore):
    """An S3 bucket and prefix; AWS_ENDPOINT_URL points boto3 at an S3-compatible store."""

    def __init__(self, bucket: str, prefix: str, storage_class: str | None = None, client=None,
                 batch_storage_class: str | None = None, object_lock_mode: str | None = None):
        self.bucket, self.prefix, self.storage_class = bucket, prefix.strip("/"), storage_class
        # Batches are read back right after they are written: a class readable at once (settings).
        self.batch_storage_class = batch_storage_class
        self.object_lock_mode = object_lock_mode  # GOVERNANCE, COMPLIANCE or None
        self.client = client or s3_client()

    # A streamed write gathers a part of a multipart upload before it sends it.
    write_buffer_bytes = PART_BUFFER_BYTES

    @property
    def max_parallel_requests(self) -> int:
        return pool_connections(self.client)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _relative(self, full_key: str) -> str:
        return full_key[len(self.prefix) + 1:] if self.prefix else full_key

    @contextlib.contextmanager
    def _errors(self, what: str, key: str):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "error")
            if code == "PreconditionFailed":  # only a write-once put (put_new) sends a condition
                raise ObjectExists(f"archive store: {self.uri(key)} exists already; it was not written over") from None
            raise StoreUnavailable(f"archive store: {what} {self.uri(key)} failed: {code}") from None
        except BotoCoreError as exc:
            raise StoreUnavailable(f"archive store {self.uri('')} is unreachable: {exc}") from None

    def _call(self, what: str, key: str, call, **kwargs):
        from botocore.exceptions import ClientError

        with self._errors(what, key):
            try:
                return call(Bucket=self.bucket, Key=self._key(key), **kwargs)
            except ClientError as exc:
                if what == "head" and exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    return None
                raise

    def _put(self, key: str, data: bytes, storage_class: str | None, retain_until: datetime | None,
             **conditions) -> dict:
        # S3 checks the SHA-256 on arrival and keeps it, so that `holds` can verify an object in a
        # cold storage class (GLACIER, DEEP_ARCHIVE), which cannot be read back without a restore.
        # ChecksumAlgorithm sends the header S3 requires of a put under an Object Lock.
        extra = {"StorageClass": storage_class} if storage_class else {}
        if retain_until is not None and self.object_lock_mode:
            extra.update(ObjectLockMode=self.object_lock_mode, ObjectLockRetainUntilDate=retain_until)
        checksum = base64.b64encode(hashlib.sha256(data).digest()).decode()
        return self._call("put", key, self.client.put_object, Body=data, ChecksumAlgorithm="SHA256",
                          ChecksumSHA256=checksum, **extra, **conditions)

    def put(self, key: str, data: bytes, retain_until: datetime | None = None) -> None:
        self._put(key, data, self.batch_storage_class, retain_until)

    def put_cold(self, key: str, data: bytes, retain_until: datetime | None = None) -> None:
        self._put(key, data, self.storage_class, retain_until)

    def put_new(self, key: str, data: bytes, retain_until: datetime | None = None) -> None:
        """A conditional put (If-None-Match: *): S3 itself refuses it, with 412, where the key has
        a current object, so that no check-then-put race can write over one."""
        self._put(key, data, self.batch_storage_class, retain_until, IfNoneMatch="*")

    def keys_written_over(self, prefix: str) -> set[str]:
        """Needs s3:ListBucketVersions, as `delete` does."""
        seen: dict[str, int] = {}
        pages = self.client.get_paginator("list_object_versions").paginate(Bucket=self.bucket, Prefix=self._key(prefix))
        with self._errors("list versions of", prefix):
            for page in pages:
                for version in page.get("Versions", []) + page.get("DeleteMarkers", []):
                    key = self._relative(version["Key"])
                    seen[key] = seen.get(key, 0) + 1
        return {key for key, count in seen.items() if count > 1}

    def put_cold_streamed(self, key: str, chunks: Iterable[bytes], retain_until: datetime | None = None) -> str | None:
        """One PUT for an object of one part, a multipart upload for a larger one (aborted on any
        failure), verified as put_cold_verified verifies: from the answer's digest, which for a
        multipart upload is S3's digest of its parts' digests (each part checked on arrival)."""
        extra = {"StorageClass": self.storage_class} if self.storage_class else {}
        if retain_until is not None and self.object_lock_mode:
            extra.update(ObjectLockMode=self.object_lock_mode, ObjectLockRetainUntilDate=retain_until)
        with self._errors("put", key):
            answer, written = put_streamed(self.client, self.bucket, self._key(key), chunks, **extra)
        matches = written.matches(answer)
        if matches is None:
            head = self._call("head", key, self.client.head_object, ChecksumMode="ENABLED")
            matches = written.matches(head or {}) if head is not None else False
        if matches is None:
            matches = self.stored_sha256(key) == written.sha256
        return written.sha256 if matches else None

    def put_cold_verified(self, key: str, data: bytes, retain_until: datetime | None = None) -> bool:
        """Verified from the PUT's own answer, without the HEAD that `holds` would send. As strong:
        S3 answers a PUT only once the object is stored, and the digests in its answer are the
        ones a HEAD would read back (the SHA-256 it checked the bytes against on arrival and
        keeps, or the ETag, the MD5 of what it received), of the very version the PUT wrote. An
        answer that carries neither (a store that keeps no checksum, an ETag that is no MD5)
        falls back to `holds`."""
        matches = _whole(data).matches(self._put(key, data, self.storage_class, retain_until))
        return self.holds(key, data) if matches is None else matches

    def retain_until(self, now: Callable[[], datetime], keep_for: timedelta | None) -> datetime | None:
        if not self.object_lock_mode:
            return None
        if keep_for is None:
            raise ValueError("an Object Lock date needs the domain's archive.keep_for")
        return now() + keep_for

    def lock(self, key: str) -> ObjectLock | None:
        head = self._call("head", key, self.client.head_object)
        if head is None or not (head.get("ObjectLockMode") or head.get("ObjectLockLegalHoldStatus") == "ON"):
            return None
        until = head.get("ObjectLockRetainUntilDate")
        return ObjectLock(head.get("ObjectLockMode"), until.astimezone(UTC) if until else None,
                          head.get("ObjectLockLegalHoldStatus") == "ON")

    def objects(self, prefix: str) -> Iterator[tuple[str, datetime]]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self._key(prefix))
        with self._errors("list", prefix):
            for page in pages:
                for item in page.get("Contents", []):
                    yield self._relative(item["Key"]), item["LastModified"].astimezone(UTC)

    def holds(self, key: str, data: bytes) -> bool:
        """Verified by the store's own digest of what it keeps, without reading an object that a
        cold storage class would first have to restore: the SHA-256 checksum where the store
        keeps one, else the ETag, which is the MD5 of an object written in one piece."""
        head = self._call("head", key, self.client.head_object, ChecksumMode="ENABLED")
        if head is None:
            return False
        matches = _whole(data).matches(head)
        return super().holds(key, data) if matches is None else matches

    def get(self, key: str) -> bytes:
        # The body is read after the answer's headers: a connection cut meanwhile is the store's
        # failure too (ResponseStreamingError), not a traceback.
        with self._errors("get", key):
            return self._call("get", key, self.client.get_object)["Body"].read()

    def chunks(self, key: str) -> Iterator[bytes]:
        with self._errors("get", key):
            yield from read_streamed(self._call("get", key, self.client.get_object)["Body"])

    def exists(self, key: str) -> bool:
        return self._call("head", key, self.client.head_object) is not None

    def delete(self, key: str) -> None:
        """Every version of the key, the current one last. In a versioned bucket (which Object
        Lock requires) a plain DELETE only hides the object behind a delete marker and keeps its
        bytes; deleting each version removes them, and a version under a lock is refused there.
        Needs s3:ListBucketVersions and s3:DeleteObjectVersion."""
        from botocore.exceptions import ClientError

        full_key = self._key(key)
        versions = []
        pages = self.client.get_paginator("list_object_versions").paginate(Bucket=self.bucket, Prefix=full_key)
        with self._errors("list versions of", key):
            for page in pages:
                found = page.get("Versions", []) + page.get("DeleteMarkers", [])
                versions += [version for version in found if version["Key"] == full_key]
        # The current version last: a refusal before it leaves the object listed for the next run.
        for version in sorted(versions, key=lambda v: bool(v.get("IsLatest"))):
            with self._errors("delete", key):
                try:
                    self.client.delete_object(Bucket=self.bucket, Key=full_key, VersionId=version["VersionId"])
                except ClientError as exc:
                    if exc.response.get("Error", {}).get("Code") == "AccessDenied":
                        raise DeleteRefused(f"archive store: delete {self.uri(key)} refused: AccessDenied (an Object "
                                            "Lock, a legal hold, or a missing permission)") from None
                    raise

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"


def _whole(data: bytes) -> Written:
    """The digests of an object written in one piece."""
    return Written(sha256=hashlib.sha256(data).hexdigest(), size=len(data),
                   whole_md5=hashlib.md5(data).hexdigest())  # noqa: S324 (integrity, not security)


def archive_store_from_url(url: str, storage_class: str | None = None, batch_storage_class: str | None = None,
                           object_lock_mode: str | None = None) -> ArchiveStore:
    """`s3://bucket/prefix` or `file:///absolute/folder`; anything else is refused by name.
    storage_class (RETENTION_ARCHIVE_STORAGE_CLASS) is where S3 keeps archived PDFs,
    batch_storage_class (RETENTION_ARCHIVE_BATCH_STORAGE_CLASS) the batches and manifests, and
    object_lock_mode (RETENTION_ARCHIVE_OBJECT_LOCK_MODE) the lock on each domain's objects."""
    parsed = urlparse(url)
    if parsed.scheme == "s3" and parsed.netloc:
        return S3ArchiveStore(parsed.netloc, parsed.path, storage_class, batch_storage_class=batch_storage_class,
                              object_lock_mode=object_lock_mode)
    if parsed.scheme == "file" and parsed.path:
        return LocalArchiveStore(Path(unquote(parsed.path)))
    raise StoreUnavailable(f"RETENTION_ARCHIVE_URL {display_url(url)} is neither s3://bucket/prefix nor file:///folder")
