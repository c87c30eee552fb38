"""The chunked format of an archived object (engine/archive/chunked.py): what is encrypted reads back
byte for byte whatever the object's and the chunks' sizes and however the stored bytes are cut on
the way, and any change to the stored bytes — a byte, a chunk swapped, dropped, cut short, taken
from another object or domain, bytes added — is refused; version 2 (whole) objects still read."""

from __future__ import annotations

import hashlib
import secrets
import struct

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from retention_pipelines.engine.archive.chunked import (
    HEADER_BYTES,
    MAGIC,
    ArchivedObjectDamaged,
    SealedObject,
    decrypted,
    key_id_of,
    plaintext_sha256,
    sealed_size,
)
from retention_pipelines.engine.archive.keys import DataKey
from retention_pipelines_tests.support.archives import sealed_whole

DOMAIN = "meal_plans"


def data_key() -> DataKey:
    return DataKey(secrets.token_hex(16), secrets.token_bytes(32))


def plaintext(size: int) -> bytes:
    return bytes(index * 7 % 251 for index in range(size))


def cut(data: bytes, points: list[int]) -> list[bytes]:
    """The bytes in pieces at these points (as a store's reads hand them over)."""
    marks = sorted({0, len(data), *(p % (len(data) + 1) for p in points)})
    return [data[a:b] for a, b in zip(marks, marks[1:])]


def seal(pdf: bytes, key: DataKey, chunk: int, pieces: list[int] = ()) -> tuple[bytes, SealedObject]:
    sealed = SealedObject(cut(pdf, list(pieces)), key, DOMAIN, chunk_bytes=chunk)
    return b"".join(sealed), sealed


def opened(stored: bytes, key: DataKey, pieces: list[int] = (), domain: str = DOMAIN) -> bytes:
    return b"".join(decrypted(cut(stored, list(pieces)), key.key, domain))


def records(stored: bytes) -> list[bytes]:
    """The stored object's chunk records (length and ciphertext), after its header."""
    found, at = [], HEADER_BYTES
    while at < len(stored):
        (size,) = struct.unpack(">I", stored[at:at + 4])
        found.append(stored[at:at + 4 + size])
        at += 4 + size
    return found


@st.composite
def objects(draw):
    """A chunk size and an object's size around it: none, one short of a chunk, exactly one, one
    over, many chunks, or anything up to a few chunks; the pieces its plaintext and its stored
    bytes arrive in."""
    chunk = draw(st.integers(1, 64))
    size = draw(st.one_of(st.sampled_from([0, max(chunk - 1, 0), chunk, chunk + 1, 7 * chunk, 7 * chunk + 3]),
                          st.integers(0, 5 * chunk)))
    return chunk, size, draw(st.lists(st.integers(0, 10_000), max_size=6)), \
        draw(st.lists(st.integers(0, 10_000), max_size=6))


@settings(max_examples=200, deadline=None)
@given(objects(), st.data())
@example((4, 0, [], []), None)
@example((4, 4, [], []), None)
@example((4, 3, [1], [5]), None)
@example((4, 5, [2], [7]), None)
def test_what_is_encrypted_reads_back_and_any_changed_byte_is_refused(drawn, data):
    chunk, size, plain_cuts, stored_cuts = drawn
    key, pdf = data_key(), plaintext(size)
    stored, sealed = seal(pdf, key, chunk, plain_cuts)

    assert opened(stored, key, stored_cuts) == pdf
    assert sealed.sha256 == hashlib.sha256(stored).hexdigest()
    assert sealed.size == len(stored) == sealed_size(size, chunk)
    assert plaintext_sha256([stored], key.key, DOMAIN) == hashlib.sha256(pdf).hexdigest()
    assert key_id_of(stored) == key.key_id
    assert len(records(stored)) == -(-size // chunk) + 1  # the data's chunks and the last, with the digest

    if data is None:  # the explicit examples: every byte in turn
        positions, flips = range(len(stored)), [0x01] * len(stored)
    else:
        positions = [data.draw(st.integers(0, len(stored) - 1), label="position")]
        flips = [data.draw(st.integers(1, 255), label="xor")]
    for position, flip in zip(positions, flips):
        changed = bytearray(stored)
        changed[position] ^= flip
        with pytest.raises(ArchivedObjectDamaged):
            opened(bytes(changed), key, stored_cuts)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 16), st.integers(0, 100), st.data())
def test_an_object_cut_short_or_extended_anywhere_is_refused(chunk, size, data):
    key = data_key()
    stored, _ = seal(plaintext(size), key, chunk)
    end = data.draw(st.integers(0, len(stored) - 1), label="cut at")
    with pytest.raises(ArchivedObjectDamaged):
        opened(stored[:end], key)
    with pytest.raises(ArchivedObjectDamaged):
        opened(stored + data.draw(st.binary(min_size=1, max_size=20), label="added"), key)


def test_chunks_swapped_dropped_or_taken_from_another_object_are_refused():
    key, chunk = data_key(), 8
    pdf = plaintext(5 * chunk + 3)
    stored, _ = seal(pdf, key, chunk)
    header, chunks = stored[:HEADER_BYTES], records(stored)
    assert len(chunks) == 7

    swapped = header + chunks[1] + chunks[0] + b"".join(chunks[2:])
    dropped_last = header + b"".join(chunks[:-1])  # every byte of the PDF, without the chunk that closes it
    dropped_middle = header + chunks[0] + b"".join(chunks[2:])
    last_moved_up = header + chunks[0] + chunks[-1]
    # The same PDF under the same key again: another salt, another key for its chunks.
    other, _ = seal(pdf, key, chunk)
    spliced = header + chunks[0] + records(other)[1] + b"".join(chunks[2:])
    for damaged in (swapped, dropped_last, dropped_middle, last_moved_up, spliced):
        with pytest.raises(ArchivedObjectDamaged):
            opened(damaged, key)
    assert other != stored and opened(other, key) == pdf

    with pytest.raises(ArchivedObjectDamaged):
        opened(stored, data_key())  # another subject's key
    with pytest.raises(ArchivedObjectDamaged):
        opened(stored, key, domain="email_blacklist")  # another domain's object
    with pytest.raises(ArchivedObjectDamaged, match="not an encrypted archive object"):
        opened(pdf, key)
    with pytest.raises(ArchivedObjectDamaged, match="longer than its header allows"):
        opened(header + struct.pack(">I", 2**31) + b"x" * 64, key)  # no reader allocates what a header claims


def test_the_plaintext_is_nowhere_in_the_stored_bytes_and_each_object_is_encrypted_afresh():
    key = data_key()
    pdf = b"%PDF-1.7 a meal plan for Ann\n" * 1000 + b"%%EOF\n"
    first, _ = seal(pdf, key, 1024)
    second, _ = seal(pdf, key, 1024)
    assert first.startswith(MAGIC) and b"meal plan" not in first and b"Ann" not in first
    assert first != second  # a salt of its own: no two objects share a chunk key
    sealed = SealedObject([pdf], key, DOMAIN)
    list(sealed)
    with pytest.raises(RuntimeError, match="encrypted once"):
        list(sealed)  # never the same nonces twice under one key
    assert hashlib.sha256(pdf).digest() not in first  # the digest is inside the last chunk, encrypted


@pytest.mark.parametrize("size", [0, 1, 4096])
def test_an_object_of_version_2_encrypted_whole_still_reads(size):
    key, pdf = data_key(), plaintext(size)
    stored = sealed_whole(pdf, key)
    assert key_id_of(stored) == key.key_id
    assert opened(stored, key, [3, 50]) == pdf
    assert plaintext_sha256([stored], key.key, DOMAIN) == hashlib.sha256(pdf).hexdigest()
    changed = bytearray(stored)
    changed[-1] ^= 1
    with pytest.raises(ArchivedObjectDamaged):
        opened(bytes(changed), key)
