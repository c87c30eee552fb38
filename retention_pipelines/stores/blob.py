"""Hot object storage of the app (the meal-plan PDFs): read, and delete in bulk with retries, each
object only while it is still the version that was read."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from tenacity import RetryError, retry, retry_if_result, stop_after_attempt, wait_exponential

from retention_pipelines.errors import KeyOutsideStore, StoreUnavailable
from retention_pipelines.redaction import display_url
from retention_pipelines.stores.files import READ_CHUNK_BYTES, inside, write_streamed
from retention_pipelines.stores.s3 import pool_connections, put_streamed, read_streamed, s3_client

# Why a local store did not delete a key that leads out of its folder: short, and without the key.
KEY_OUTSIDE = "the key leads outside the store"
S3_DELETE_LIMIT = 1000  # keys per DeleteObjects request
# S3 error codes worth another try: throttling and the service's own transient failures.
# ConditionalRequestConflict (409): another request on the same key was in flight.
TRANSIENT = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError",
             "ServiceUnavailable", "503", "500", "ConditionalRequestConflict"}
# The error of a conditional delete whose object is no longer the version it was asked to delete.
CHANGED = "PreconditionFailed"


@dataclass(frozen=True)
class Blob:
    data: bytes
    version: str  # what changes when the object is rewritten under its key (see BlobStore.version)


class OpenedBlob:
    """An object opened for reading, its bytes read chunk by chunk: iterate it once. `size` is its
    length where the store says it before the bytes; `version` is what BlobStore.version would
    say of the bytes read: known when opened (S3's ETag) or once they are read through (a
    folder's digest of its contents)."""

    def __init__(self, chunks: Iterator[bytes], size: int | None, version: str | None = None):
        self._chunks, self.size, self.version = chunks, size, version
        self._digest = hashlib.sha256() if version is None else None

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            if self._digest is not None:
                self._digest.update(chunk)
            yield chunk
        if self._digest is not None:
            self.version = self._digest.hexdigest()

    def close(self) -> None:
        """Let go of the file or connection of a blob not read through."""
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()


class BlobStore(ABC):
    # How many requests the store may be sent at once (the engine's object threads). A local
    # folder: enough to overlap the disk's waits, few enough for a laptop.
    max_parallel_requests = 8

    def get(self, key: str) -> bytes | None:
        """The object's bytes; None when there is no such object."""
        blob = self.read(key)
        return blob.data if blob is not None else None

    @abstractmethod
    def read(self, key: str) -> Blob | None:
        """The object's bytes and the version they are of, read together; None when there is no
        such object."""

    @abstractmethod
    def open(self, key: str) -> OpenedBlob | None:
        """The object, to be read chunk by chunk (an object of any size is read this way); None
        when there is no such object."""

    @abstractmethod
    def put_streamed(self, key: str, chunks: Iterable[bytes]) -> None:
        """Write an object of any size as its chunks come; nothing under the key changes unless
        every chunk is written (an error in `chunks` included). A restore writes PDFs back so."""

    @abstractmethod
    def version(self, key: str) -> str | None:
        """The object's current version (S3: its ETag; a folder: its contents' sha256), without
        its bytes; None when there is no such object."""

    @abstractmethod
    def delete_many(self, keys: Sequence[str], versions: Mapping[str, str] | None = None) -> dict[str, str]:
        """Delete the objects; returns {key: error} for each one still there after retries.
        Deleting an object that is already gone is a success. With `versions`, each key is deleted
        only while it is still that version; one rewritten since stays, with the error CHANGED."""

    @abstractmethod
    def uri(self, key: str) -> str: ...

    @abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Write an object (the app writes PDFs; this project only its health probe)."""

    @abstractmethod
    def keys(self) -> Iterator[str]:
        """Every object's key, page by page."""


class LocalBlobStore(BlobStore):
    """A folder; a key that would lead out of it is refused (KeyOutsideStore) before any file is touched."""

    def __init__(self, root: Path):
        self.root = root

    def read(self, key: str) -> Blob | None:
        path = inside(self.root, key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreUnavailable(f"blob {self.uri(key)} cannot be read: {exc.strerror or exc}") from None
        return Blob(data, _file_version(data))

    def open(self, key: str) -> OpenedBlob | None:
        path = inside(self.root, key)
        try:
            size = path.stat().st_size
            handle = path.open("rb")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreUnavailable(f"blob {self.uri(key)} cannot be read: {exc.strerror or exc}") from None
        return OpenedBlob(self._read(handle, key), size)

    def _read(self, handle, key: str) -> Iterator[bytes]:
        with handle:
            try:
                while chunk := handle.read(READ_CHUNK_BYTES):
                    yield chunk
            except OSError as exc:
                raise StoreUnavailable(f"blob {self.uri(key)} cannot be read: {exc.strerror or exc}") from None

    def put_streamed(self, key: str, chunks: Iterable[bytes]) -> None:
        path = inside(self.root, key)
        try:
            write_streamed(path, chunks)
        except OSError as exc:
            raise StoreUnavailable(f"blob folder {self.root} cannot be written: {exc.strerror or exc}") from None

    def version(self, key: str) -> str | None:
        opened = self.open(key)
        if opened is None:
            return None
        for _ in opened:
            pass
        return opened.version

    def delete_many(self, keys: Sequence[str], versions: Mapping[str, str] | None = None) -> dict[str, str]:
        failed = {}
        for key in keys:
            try:
                path = inside(self.root, key)
                # A folder has no conditional delete: the contents are compared just before the
                # unlink, which leaves a writer a window of one system call (S3's is closed).
                if versions is not None and self.version(key) not in (None, versions[key]):
                    failed[key] = CHANGED
                    continue
                path.unlink(missing_ok=True)
            except KeyOutsideStore:
                failed[key] = KEY_OUTSIDE
            except OSError as exc:
                failed[key] = exc.strerror or type(exc).__name__
        return failed

    def uri(self, key: str) -> str:
        return (self.root / key).as_uri()

    def put(self, key: str, data: bytes) -> None:
        path = inside(self.root, key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        except OSError as exc:
            raise StoreUnavailable(f"blob folder {self.root} cannot be written: {exc.strerror or exc}") from None

    def keys(self) -> Iterator[str]:
        # Symbolic links that lead out are not the store's objects: listed, they would be reported
        # as orphans and offered to a delete.
        if self.root.is_dir():
            base = self.root.resolve()
            for path in base.rglob("*"):
                key = path.relative_to(base).as_posix()
                if path.is_file() and _contained(self.root, key):
                    yield key


def _contained(root: Path, key: str) -> bool:
    try:
        inside(root, key)
    except KeyOutsideStore:
        return False
    return True


class S3BlobStore(BlobStore):
    def __init__(self, bucket: str, prefix: str, client=None, attempts: int = 5, wait_max_seconds: float = 8.0):
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.client = client or s3_client()
        self.attempts, self.wait_max = attempts, wait_max_seconds

    @property
    def max_parallel_requests(self) -> int:
        return pool_connections(self.client)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def read(self, key: str) -> Blob | None:
        answer = self._ask("get", key, self.client.get_object)
        return Blob(answer["Body"].read(), answer["ETag"]) if answer is not None else None

    def open(self, key: str) -> OpenedBlob | None:
        answer = self._ask("get", key, self.client.get_object)
        if answer is None:
            return None
        return OpenedBlob(self._read(answer["Body"], key), answer.get("ContentLength"), answer["ETag"])

    def _read(self, body, key: str) -> Iterator[bytes]:
        from botocore.exceptions import BotoCoreError

        try:
            yield from read_streamed(body)
        except BotoCoreError as exc:
            raise StoreUnavailable(f"blob store: get {self.uri(key)} failed: {type(exc).__name__}") from None

    def put_streamed(self, key: str, chunks: Iterable[bytes]) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            put_streamed(self.client, self.bucket, self._key(key), chunks)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "error")
            raise StoreUnavailable(f"blob store: put {self.uri(key)} failed: {code}") from None
        except BotoCoreError as exc:
            raise StoreUnavailable(f"blob store s3://{self.bucket} is unreachable: {exc}") from None

    def version(self, key: str) -> str | None:
        answer = self._ask("head", key, self.client.head_object)
        return answer["ETag"] if answer is not None else None

    def _ask(self, verb: str, key: str, call) -> dict | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return call(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "error")
            if code in ("NoSuchKey", "404", "NotFound"):
                return None
            raise StoreUnavailable(f"blob store: {verb} {self.uri(key)} failed: {code}") from None
        except BotoCoreError as exc:
            raise StoreUnavailable(f"blob store s3://{self.bucket} is unreachable: {exc}") from None

    def delete_many(self, keys: Sequence[str], versions: Mapping[str, str] | None = None) -> dict[str, str]:
        failed: dict[str, str] = {}
        for start in range(0, len(keys), S3_DELETE_LIMIT):
            failed.update(self._delete_chunk(list(keys[start:start + S3_DELETE_LIMIT]), versions))
        return failed

    def _delete_chunk(self, keys: list[str], versions: Mapping[str, str] | None) -> dict[str, str]:
        """DeleteObjects, then again for the keys that failed transiently, with exponential backoff
        (tenacity); a key that fails for good, or still fails after the last try, is returned.
        With versions, each object carries its ETag: S3 deletes it only if it still has that ETag
        (a conditional delete, which general purpose buckets and moto support; it needs
        s3:GetObject beside s3:DeleteObject), so that an object rewritten after it was read is
        never deleted, with no window between a check and the delete."""
        from botocore.exceptions import BotoCoreError, ClientError

        pending = {self._key(k): k for k in keys}
        final: dict[str, str] = {}

        def named(full_key: str) -> dict:
            if versions is None:
                return {"Key": full_key}
            return {"Key": full_key, "ETag": versions[pending[full_key]]}

        def attempt() -> dict[str, str]:
            try:
                response = self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": [named(k) for k in pending], "Quiet": True})
                # A conditional delete of an object already gone answers NoSuchKey: gone is done.
                errors = {e["Key"]: e.get("Code", "error") for e in response.get("Errors", [])
                          if e.get("Code") != "NoSuchKey"}
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "error")
                errors = {k: code for k in pending}
            except BotoCoreError as exc:
                errors = {k: type(exc).__name__ for k in pending}
            for full_key in list(pending):
                if full_key not in errors:
                    del pending[full_key]
                elif errors[full_key] not in TRANSIENT and errors[full_key] not in ("EndpointConnectionError",
                                                                                   "ConnectTimeoutError"):
                    final[pending.pop(full_key)] = errors[full_key]
            return {pending[k]: errors[k] for k in pending}

        retrying = retry(retry=retry_if_result(bool), stop=stop_after_attempt(self.attempts),
                         wait=wait_exponential(multiplier=0.2, max=self.wait_max))(attempt)
        try:
            still = retrying()
        except RetryError as exc:
            still = exc.last_attempt.result()
        return {**final, **still}

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def put(self, key: str, data: bytes) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "error")
            raise StoreUnavailable(f"blob store: put {self.uri(key)} failed: {code}") from None
        except BotoCoreError as exc:
            raise StoreUnavailable(f"blob store s3://{self.bucket} is unreachable: {exc}") from None

    def keys(self) -> Iterator[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        start = f"{self.prefix}/" if self.prefix else ""
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=start):
                for item in page.get("Contents", []):
                    yield item["Key"][len(start):]
        except (BotoCoreError, ClientError) as exc:
            raise StoreUnavailable(f"blob store s3://{self.bucket} cannot be listed: {exc}") from None


def _file_version(data: bytes) -> str:
    """A file's version is its contents' digest: a folder's modification times may be as coarse as
    a second or two, too coarse to tell a rewrite of the same size."""
    return hashlib.sha256(data).hexdigest()


def blob_store_from_url(url: str) -> BlobStore:
    """`s3://bucket/prefix` or `file:///absolute/folder` (RETENTION_BLOB_URL)."""
    parsed = urlparse(url)
    if parsed.scheme == "s3" and parsed.netloc:
        return S3BlobStore(parsed.netloc, parsed.path)
    if parsed.scheme == "file" and parsed.path:
        return LocalBlobStore(Path(unquote(parsed.path)))
    raise StoreUnavailable(f"RETENTION_BLOB_URL {display_url(url)} is neither s3://bucket/prefix nor file:///folder")
