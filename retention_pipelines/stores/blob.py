"""Hot object storage of the app (the meal-plan PDFs): read, and delete in bulk with retries."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import unquote, urlparse

from tenacity import RetryError, retry, retry_if_result, stop_after_attempt, wait_exponential

from retention_pipelines.redaction import display_url
from retention_pipelines.stores.database import StoreUnavailable
from retention_pipelines.stores.s3 import pool_connections, s3_client

S3_DELETE_LIMIT = 1000  # keys per DeleteObjects request
# S3 error codes worth another try: throttling and the service's own transient failures.
TRANSIENT = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError",
             "ServiceUnavailable", "503", "500"}


class BlobStore(ABC):
    # How many requests the store may be sent at once (the engine's object threads). A local
    # folder: enough to overlap the disk's waits, few enough for a laptop.
    max_parallel_requests = 8

    @abstractmethod
    def get(self, key: str) -> bytes | None:
        """The object's bytes; None when there is no such object."""

    @abstractmethod
    def delete_many(self, keys: Sequence[str]) -> dict[str, str]:
        """Delete the objects; returns {key: error} for each one still there after retries.
        Deleting an object that is already gone is a success."""

    @abstractmethod
    def uri(self, key: str) -> str: ...

    @abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Write an object (the app writes PDFs; this project only its health probe)."""

    @abstractmethod
    def keys(self) -> Iterator[str]:
        """Every object's key, page by page."""


class LocalBlobStore(BlobStore):
    def __init__(self, root: Path):
        self.root = root

    def get(self, key: str) -> bytes | None:
        try:
            return (self.root / key).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreUnavailable(f"blob {self.uri(key)} cannot be read: {exc.strerror or exc}") from None

    def delete_many(self, keys: Sequence[str]) -> dict[str, str]:
        failed = {}
        for key in keys:
            try:
                (self.root / key).unlink(missing_ok=True)
            except OSError as exc:
                failed[key] = exc.strerror or type(exc).__name__
        return failed

    def uri(self, key: str) -> str:
        return (self.root / key).as_uri()

    def put(self, key: str, data: bytes) -> None:
        try:
            (self.root / key).parent.mkdir(parents=True, exist_ok=True)
            (self.root / key).write_bytes(data)
        except OSError as exc:
            raise StoreUnavailable(f"blob folder {self.root} cannot be written: {exc.strerror or exc}") from None

    def keys(self) -> Iterator[str]:
        if self.root.is_dir():
            for path in self.root.rglob("*"):
                if path.is_file():
                    yield path.relative_to(self.root).as_posix()


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

    def get(self, key: str) -> bytes | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "error")
            if code in ("NoSuchKey", "404", "NotFound"):
                return None
            raise StoreUnavailable(f"blob store: get {self.uri(key)} failed: {code}") from None
        except BotoCoreError as exc:
            raise StoreUnavailable(f"blob store s3://{self.bucket} is unreachable: {exc}") from None

    def delete_many(self, keys: Sequence[str]) -> dict[str, str]:
        failed: dict[str, str] = {}
        for start in range(0, len(keys), S3_DELETE_LIMIT):
            failed.update(self._delete_chunk(list(keys[start:start + S3_DELETE_LIMIT])))
        return failed

    def _delete_chunk(self, keys: list[str]) -> dict[str, str]:
        """DeleteObjects, then again for the keys that failed transiently, with exponential backoff
        (tenacity); a key that fails for good, or still fails after the last try, is returned."""
        from botocore.exceptions import BotoCoreError, ClientError

        pending = {self._key(k): k for k in keys}
        final: dict[str, str] = {}

        def attempt() -> dict[str, str]:
            try:
                response = self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in pending], "Quiet": True})
                errors = {e["Key"]: e.get("Code", "error") for e in response.get("Errors", [])}
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


def blob_store_from_url(url: str) -> BlobStore:
    """`s3://bucket/prefix` or `file:///absolute/folder` (RETENTION_BLOB_URL)."""
    parsed = urlparse(url)
    if parsed.scheme == "s3" and parsed.netloc:
        return S3BlobStore(parsed.netloc, parsed.path)
    if parsed.scheme == "file" and parsed.path:
        return LocalBlobStore(Path(unquote(parsed.path)))
    raise StoreUnavailable(f"RETENTION_BLOB_URL {display_url(url)} is neither s3://bucket/prefix nor file:///folder")
