"""Archive stores: where archived batches go. S3 (or S3-compatible) in production, a folder for the demo."""

from __future__ import annotations

import base64
import hashlib
import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

from retention_pipelines.stores.database import StoreUnavailable


class ArchiveStore(ABC):
    """Keys are relative paths ('email_blacklist/2026/11/29/<hmac>.jsonl.enc'); URIs are absolute."""

    @abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Write the object durably; a reader that sees it sees all of it."""

    @abstractmethod
    def get(self, key: str) -> bytes: ...

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def uri(self, key: str) -> str: ...

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove an object (the health probe's; archives are removed by their retention job)."""

    def key_of(self, uri: str) -> str | None:
        """The key of one of this store's URIs (as in the audit log); None for another store's."""
        base = self.uri("x")[:-1]
        return uri[len(base):] if uri.startswith(base) and len(uri) > len(base) else None

    @abstractmethod
    def keys(self, prefix: str) -> Iterator[str]:
        """The keys of the objects whose key starts with `prefix`, in key order."""

    def put_cold(self, key: str, data: bytes) -> None:
        """Write an object meant to be kept, not read (a PDF): cold storage where the store has it."""
        self.put(key, data)

    def holds(self, key: str, data: bytes) -> bool:
        """Whether the stored object is exactly these bytes."""
        try:
            return hashlib.sha256(self.get(key)).digest() == hashlib.sha256(data).digest()
        except StoreUnavailable:
            return False


class LocalArchiveStore(ArchiveStore):
    """A folder: writes go to a temporary file, fsync'd, then renamed, so a kill leaves no torn object."""

    def __init__(self, root: Path):
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / key

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".partial-")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temporary, path)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise StoreUnavailable(f"archive folder {self.root} cannot be written: {exc.strerror or exc}") from None

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except OSError as exc:
            raise StoreUnavailable(f"archive object {self.uri(key)} cannot be read: {exc.strerror or exc}") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def keys(self, prefix: str) -> Iterator[str]:
        # Walk only the folder the prefix names (a prefix may end inside a file name).
        folder = self._path(prefix) if prefix.endswith("/") else self._path(prefix).parent
        if not folder.is_dir():
            return
        found = (path.relative_to(self.root).as_posix() for path in folder.rglob("*")
                 if path.is_file() and not path.name.startswith(".partial-"))
        yield from sorted(key for key in found if key.startswith(prefix))

    def uri(self, key: str) -> str:
        return self._path(key).as_uri()


class S3ArchiveStore(ArchiveStore):
    """An S3 bucket and prefix; AWS_ENDPOINT_URL points boto3 at an S3-compatible store."""

    def __init__(self, bucket: str, prefix: str, storage_class: str | None = None, client=None):
        import boto3
        from botocore.config import Config

        self.bucket, self.prefix, self.storage_class = bucket, prefix.strip("/"), storage_class
        # botocore's own retry mode handles throttling and transient errors with backoff.
        self.client = client or boto3.client(
            "s3", config=Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=60)
        )

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, what: str, key: str, call, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return call(Bucket=self.bucket, Key=self._key(key), **kwargs)
        except ClientError as exc:
            if what == "head" and exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            code = exc.response.get("Error", {}).get("Code", "error")
            raise StoreUnavailable(f"archive store: {what} {self.uri(key)} failed: {code}") from None
        except BotoCoreError as exc:
            raise StoreUnavailable(f"archive store {self.uri('')} is unreachable: {exc}") from None

    def put(self, key: str, data: bytes) -> None:
        self._call("put", key, self.client.put_object, Body=data)

    def put_cold(self, key: str, data: bytes) -> None:
        # S3 checks the SHA-256 on arrival and keeps it, so that `holds` can verify an object in a
        # cold storage class (GLACIER, DEEP_ARCHIVE), which cannot be read back without a restore.
        extra = {"StorageClass": self.storage_class} if self.storage_class else {}
        checksum = base64.b64encode(hashlib.sha256(data).digest()).decode()
        self._call("put", key, self.client.put_object, Body=data, ChecksumSHA256=checksum, **extra)

    def holds(self, key: str, data: bytes) -> bool:
        """Verified by the store's own digest of what it keeps, without reading an object that a
        cold storage class would first have to restore: the SHA-256 checksum where the store
        keeps one, else the ETag, which is the MD5 of an object written in one piece."""
        head = self._call("head", key, self.client.head_object, ChecksumMode="ENABLED")
        if head is None:
            return False
        if head.get("ChecksumSHA256"):
            return base64.b64decode(head["ChecksumSHA256"]) == hashlib.sha256(data).digest()
        etag = head.get("ETag", "").strip('"')
        if etag and "-" not in etag:
            return etag == hashlib.md5(data).hexdigest()  # noqa: S324 (integrity, not security)
        return super().holds(key, data)

    def get(self, key: str) -> bytes:
        return self._call("get", key, self.client.get_object)["Body"].read()

    def exists(self, key: str) -> bool:
        return self._call("head", key, self.client.head_object) is not None

    def delete(self, key: str) -> None:
        self._call("delete", key, self.client.delete_object)

    def keys(self, prefix: str) -> Iterator[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        strip = len(self._key(""))
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                              Prefix=self._key(prefix)):
                for item in page.get("Contents", []):
                    yield item["Key"][strip:]
        except (BotoCoreError, ClientError) as exc:
            raise StoreUnavailable(f"archive store: list {self.uri(prefix)} failed: {exc}") from None

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"


def archive_store_from_url(url: str, storage_class: str | None = None) -> ArchiveStore:
    """`s3://bucket/prefix` or `file:///absolute/folder`; anything else is refused by name.
    storage_class (RETENTION_ARCHIVE_STORAGE_CLASS) is where S3 keeps archived PDFs."""
    parsed = urlparse(url)
    if parsed.scheme == "s3" and parsed.netloc:
        return S3ArchiveStore(parsed.netloc, parsed.path, storage_class)
    if parsed.scheme == "file" and parsed.path:
        return LocalArchiveStore(Path(unquote(parsed.path)))
    raise StoreUnavailable(f"RETENTION_ARCHIVE_URL {url!r} is neither s3://bucket/prefix nor file:///folder")
