"""The boto3 S3 client the stores share, how many requests one client may have in flight, and
objects of any size written a part and read a chunk at a time."""

from __future__ import annotations

import base64
import contextlib
import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

# Connections a store's client keeps open to S3: the engine runs this many object requests side
# by side (split between the batches in flight). botocore's default is 10; past the pool's size
# urllib3 opens a connection per request and throws it away ("Connection pool is full"), so the
# thread count and the pool are sized together, here.
S3_POOL_CONNECTIONS = 32


def s3_client():
    """A boto3 S3 client (thread-safe: a store's threads share it). botocore's standard retry
    mode handles throttling and transient errors with backoff; AWS_ENDPOINT_URL points it at an
    S3-compatible store."""
    import boto3
    from botocore.config import Config

    return boto3.client("s3", config=Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5,
                                            read_timeout=60, max_pool_connections=S3_POOL_CONNECTIONS))


def pool_connections(client) -> int:
    """The size of a client's connection pool: as many requests as it may run at once, whoever
    made it (a client passed in by a caller keeps its own setting)."""
    return client.meta.config.max_pool_connections


# A multipart upload's part: S3 takes parts of at least 5 MiB but the last, and at most 10,000 of
# them (an object of up to 80 GB at this size). Each object written holds one part in memory, and
# a part gathered a chunk at a time may take an eighth more while it grows.
PART_BYTES = 8 * 1024 * 1024
PART_BUFFER_BYTES = PART_BYTES + PART_BYTES // 8
MAX_PARTS = 10_000
# What a streamed read asks of the connection at a time.
READ_CHUNK_BYTES = 1024 * 1024


@dataclass
class Written:
    """The digests of the bytes an upload sent, as S3 gives them back: of the whole object written
    in one piece, or of each part of a multipart upload (S3's checksum and ETag of such an object
    are digests of its parts' digests)."""

    sha256: str = ""  # of every byte sent, hex
    size: int = 0
    whole_md5: str = ""  # hex, for an object written in one piece
    parts: list[tuple[bytes, bytes]] = field(default_factory=list)  # each part's (sha256, md5)

    def matches(self, answer: dict) -> bool | None:
        """Whether S3's digest of what it stored (a PUT's, a CompleteMultipartUpload's or a HEAD's
        answer) is the digest of the bytes sent; None when the answer carries none that can tell."""
        checksum = answer.get("ChecksumSHA256")
        if checksum:
            if self.parts:
                # S3 writes the parts' count after it, or leaves it out (some answers, some stores).
                composite = base64.b64encode(hashlib.sha256(b"".join(sha for sha, _ in self.parts)).digest()).decode()
                return checksum in (composite, f"{composite}-{len(self.parts)}")
            return "-" not in checksum and base64.b64decode(checksum) == bytes.fromhex(self.sha256)
        etag = answer.get("ETag", "").strip('"')
        if self.parts and etag.endswith(f"-{len(self.parts)}"):
            md5 = hashlib.md5(b"".join(md5 for _, md5 in self.parts)).hexdigest()  # noqa: S324 (integrity)
            return etag == f"{md5}-{len(self.parts)}"
        if etag and "-" not in etag and not self.parts:
            return etag == self.whole_md5
        return None


def put_streamed(client, bucket: str, key: str, chunks: Iterable[bytes], part_bytes: int = PART_BYTES,
                 **extra) -> tuple[dict, Written]:
    """The chunks as one object, holding one part in memory: an object of one part in one PUT,
    a larger one by a multipart upload, aborted if anything fails before it is complete (an
    incomplete upload is no object: nothing under the key changes). Each part carries its
    SHA-256, which S3 checks on arrival. Returns S3's answer and the digests of what was sent."""
    written, whole = Written(), hashlib.sha256()
    parts = _parts(chunks, part_bytes)
    first, last = next(parts, (bytearray(), True))
    if last:
        whole.update(first)
        written.sha256, written.size = whole.hexdigest(), len(first)
        written.whole_md5 = hashlib.md5(first).hexdigest()  # noqa: S324 (integrity, not security)
        answer = client.put_object(Bucket=bucket, Key=key, Body=first, ChecksumAlgorithm="SHA256",
                                   ChecksumSHA256=_b64(whole.digest()), **extra)
        return answer, written
    upload = client.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm="SHA256", **extra)["UploadId"]
    try:
        sent, part, number = [], first, 0
        del first  # one part in memory at a time: the name would keep the first alive to the end
        while part is not None:
            number += 1
            if number > MAX_PARTS:
                raise ValueError(f"an object of more than {MAX_PARTS} parts of {part_bytes} bytes")
            sha, md5 = hashlib.sha256(part).digest(), hashlib.md5(part).digest()  # noqa: S324 (integrity)
            whole.update(part)
            written.size += len(part)
            written.parts.append((sha, md5))
            answer = client.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=number, Body=part,
                                        ChecksumSHA256=_b64(sha))
            sent.append({"PartNumber": number, "ETag": answer["ETag"], "ChecksumSHA256": _b64(sha)})
            part = None
            part, _ = next(parts, (None, True))
        written.sha256 = whole.hexdigest()
        answer = client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload,
                                                  MultipartUpload={"Parts": sent})
    except BaseException:
        # A part S3 holds of an upload never completed is billed until aborted: abort it now (a
        # process killed here leaves it to the bucket's AbortIncompleteMultipartUpload rule).
        with contextlib.suppress(Exception):
            client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload)
        raise
    return answer, written


def read_streamed(body, chunk_bytes: int = READ_CHUNK_BYTES) -> Iterator[bytes]:
    """A GetObject's body, chunk by chunk; the connection goes back to the pool when it is read
    through, or is closed when the reader stops early."""
    try:
        yield from body.iter_chunks(chunk_bytes)
    finally:
        body.close()


def _parts(chunks: Iterable[bytes], part_bytes: int) -> Iterator[tuple[bytearray, bool]]:
    """(part, whether it is the last) of at least part_bytes each but the last; it looks one chunk
    ahead, not one part, to tell the last. Each part is gathered in place, never joined: a part in
    memory once, not twice."""
    part = bytearray()
    pending = iter(chunks)
    ahead = next(pending, None)
    while ahead is not None:
        part += ahead
        ahead = next(pending, None)
        if len(part) >= part_bytes or ahead is None:
            yield part, ahead is None
            part = bytearray()


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()
