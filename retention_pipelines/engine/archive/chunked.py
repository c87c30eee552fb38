"""The archive format of an object (a PDF), version 3: encrypted in chunks, so that an object of any
size is copied, verified and read back with a chunk in memory at a time, never the whole.

    header   b"RPA3" | the data key's id (32 hex digits) | chunk size (4 bytes, big-endian) | salt (16 random bytes)
    records  per chunk: the ciphertext's length (4 bytes, big-endian) | AES-256-GCM ciphertext with its tag

The chunks are encrypted with a key derived by HKDF-SHA256 from the object's data key (its
subject's, engine/archive/keys.py) and the salt: a key of its own per object, so that a chunk's
nonce can be its index and never repeats under one key, and destroying the data key (an erasure)
leaves no chunk of the object readable. Each nonce holds the chunk's index and whether it is the
last; the header and the domain are bound in as associated data. A chunk changed, swapped with
another, taken from another object or domain, a record cut short, the last chunk dropped or
anything after it: each fails to decrypt. The last chunk holds the SHA-256 of the plaintext,
checked once every chunk before it has been read; encrypted, it cannot confirm a guess of an
erased PDF.

Version 2 (b"RPA2", the object encrypted whole) is still read: `decrypted` takes both.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterable, Iterator

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from retention_pipelines.engine.archive.format import BLOB_MAGIC, decrypt_blob
from retention_pipelines.engine.archive.keys import KEY_BYTES, DataKey

MAGIC = b"RPA3"
KEY_ID_CHARS = 32
SALT_BYTES = 16
HEAD_BYTES = len(MAGIC) + KEY_ID_CHARS  # what key_id_of reads
HEADER_BYTES = HEAD_BYTES + 4 + SALT_BYTES
TAG_BYTES = 16
DIGEST_BYTES = 32
# A chunk of plaintext: large enough that a tag and a length every MiB cost nothing, small beside
# the part of a multipart upload it is gathered into.
CHUNK_BYTES = 1024 * 1024
# What a header may claim: a record is read whole, so a changed header must not make a reader
# allocate gigabytes before the tag refuses it.
MAX_CHUNK_BYTES = 64 * 1024 * 1024


class ArchivedObjectDamaged(ValueError):
    """An archived object does not decrypt as written: changed, cut short, extended, or not one."""


class SealedObject:
    """One object encrypted chunk by chunk as its plaintext is read: iterate it once for the bytes
    the archive keeps. Once iterated, `sha256` is their digest (what the manifest keeps) and
    `size` their length."""

    def __init__(self, plaintext: Iterable[bytes], data_key: DataKey, domain: str, chunk_bytes: int = CHUNK_BYTES):
        if not 0 < chunk_bytes <= MAX_CHUNK_BYTES:
            raise ValueError(f"a chunk is 1 to {MAX_CHUNK_BYTES} bytes")
        self._plaintext, self._domain, self._chunk = plaintext, domain, chunk_bytes
        self._header = MAGIC + data_key.key_id.encode() + struct.pack(">I", chunk_bytes) + os.urandom(SALT_BYTES)
        self._aead = AESGCM(_chunk_key(data_key.key, self._header, domain))
        self._digest = hashlib.sha256()
        self.sha256: str | None = None
        self.size, self._started = 0, False

    def __iter__(self) -> Iterator[bytes]:
        if len(self._header) != HEADER_BYTES:
            raise ValueError("a data key's id is 32 hex digits")
        if self._started:  # a second pass would encrypt under the same nonces
            raise RuntimeError("an object is encrypted once: seal it anew")
        self._started = True
        plain, index = hashlib.sha256(), 0
        associated = _associated(self._header, self._domain)
        yield self._emit(self._header)
        for chunk in _rechunked(self._plaintext, self._chunk):
            plain.update(chunk)
            yield self._emit(_record(self._aead.encrypt(_nonce(index, last=False), chunk, associated)))
            index += 1
        yield self._emit(_record(self._aead.encrypt(_nonce(index, last=True), plain.digest(), associated)))
        self.sha256 = self._digest.hexdigest()

    def _emit(self, data: bytes) -> bytes:
        self._digest.update(data)
        self.size += len(data)
        return data


def sealed_size(size: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    """The length of the archived object of a plaintext of `size` bytes."""
    chunks = -(-size // chunk_bytes)
    return HEADER_BYTES + chunks * (4 + TAG_BYTES) + size + 4 + DIGEST_BYTES + TAG_BYTES


def key_id_of(head: bytes) -> str:
    """The id of the data key an archived object (version 2 or 3) is encrypted with, from its first bytes."""
    if not head.startswith((MAGIC, BLOB_MAGIC)) or len(head) < HEAD_BYTES:
        raise ArchivedObjectDamaged("not an encrypted archive object")
    return head[len(MAGIC):HEAD_BYTES].decode("ascii", "replace")


def decrypted(stored: Iterable[bytes], key: bytes, domain: str) -> Iterator[bytes]:
    """The plaintext of an archived object, chunk by chunk, each authenticated before it is
    yielded; ArchivedObjectDamaged (after the chunks before the damage) if anything is wrong, so
    a caller writes what it yields only where it can throw it away (a draft, an upload it aborts).
    A version-2 object was written whole and is read whole."""
    reader = _ExactReader(stored)
    head = reader.read(len(MAGIC))
    if head == BLOB_MAGIC:
        try:
            yield decrypt_blob(head + reader.rest(), key, domain)
        except (InvalidTag, ValueError):
            raise ArchivedObjectDamaged("the archived object does not decrypt: changed, or not its key's") from None
        return
    header = head + reader.read(HEADER_BYTES - len(MAGIC))
    if head != MAGIC or len(header) != HEADER_BYTES:
        raise ArchivedObjectDamaged("not an encrypted archive object")
    (chunk_bytes,) = struct.unpack(">I", header[HEAD_BYTES:HEAD_BYTES + 4])
    if not 0 < chunk_bytes <= MAX_CHUNK_BYTES:
        raise ArchivedObjectDamaged("its header is damaged")
    aead, associated = AESGCM(_chunk_key(key, header, domain)), _associated(header, domain)
    plain, index = hashlib.sha256(), 0
    while True:
        length = reader.read(4)
        if len(length) < 4:
            raise ArchivedObjectDamaged(f"it ends after chunk {index} without its last chunk: cut short")
        (size,) = struct.unpack(">I", length)
        if size > max(chunk_bytes, DIGEST_BYTES) + TAG_BYTES:
            raise ArchivedObjectDamaged(f"chunk {index} is longer than its header allows")
        sealed = reader.read(size)
        if len(sealed) < size:
            raise ArchivedObjectDamaged(f"chunk {index} is cut short")
        try:
            chunk = aead.decrypt(_nonce(index, last=False), sealed, associated)
        except InvalidTag:
            chunk = None
        if chunk is None and size == DIGEST_BYTES + TAG_BYTES:
            try:  # the last chunk, whose plaintext is the digest
                digest = aead.decrypt(_nonce(index, last=True), sealed, associated)
                break
            except InvalidTag:
                pass
        if chunk is None:
            raise ArchivedObjectDamaged(f"chunk {index} does not decrypt: changed, moved, or not its key's")
        plain.update(chunk)
        yield chunk
        index += 1
    if reader.read(1):
        raise ArchivedObjectDamaged("bytes follow its last chunk")
    if digest != plain.digest():
        raise ArchivedObjectDamaged("its plaintext's digest differs from the one it was written with")


def plaintext_sha256(stored: Iterable[bytes], key: bytes, domain: str) -> str:
    """The SHA-256 of an archived object's plaintext, read through (and so authenticated) chunk by chunk."""
    digest = hashlib.sha256()
    for chunk in decrypted(stored, key, domain):
        digest.update(chunk)
    return digest.hexdigest()


def _chunk_key(data_key: bytes, header: bytes, domain: str) -> bytes:
    salt = header[-SALT_BYTES:]
    info = b"retention-archive/3 chunks|" + domain.encode() + b"|" + header[:-SALT_BYTES]
    return HKDF(hashes.SHA256(), KEY_BYTES, salt, info).derive(data_key)


def _associated(header: bytes, domain: str) -> bytes:
    return b"retention-archive/3|" + domain.encode() + b"|" + header


def _nonce(index: int, last: bool) -> bytes:
    return index.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def _record(ciphertext: bytes) -> bytes:
    return struct.pack(">I", len(ciphertext)) + ciphertext


def _rechunked(pieces: Iterable[bytes], size: int) -> Iterator[bytes]:
    """The pieces' bytes in chunks of exactly `size` (the last shorter; none for no bytes)."""
    pending = bytearray()
    for piece in pieces:
        if not pending and len(piece) == size:
            yield bytes(piece)
            continue
        pending += piece
        while len(pending) >= size:
            yield bytes(pending[:size])
            del pending[:size]
    if pending:
        yield bytes(pending)


class _ExactReader:
    """Exactly n bytes at a time out of chunks of any size (fewer only at the end)."""

    def __init__(self, chunks: Iterable[bytes]):
        self._chunks, self._pending, self._at = iter(chunks), b"", 0

    def read(self, n: int) -> bytes:
        if len(self._pending) - self._at >= n:
            self._at += n
            return self._pending[self._at - n:self._at]
        parts, wanted = [self._pending[self._at:]], n - (len(self._pending) - self._at)
        self._pending, self._at = b"", 0
        for chunk in self._chunks:
            if len(chunk) >= wanted:
                parts.append(chunk[:wanted])
                self._pending, self._at = chunk, wanted
                break
            parts.append(chunk)
            wanted -= len(chunk)
        return b"".join(parts)

    def rest(self) -> bytes:
        return self._pending[self._at:] + b"".join(self._chunks)
