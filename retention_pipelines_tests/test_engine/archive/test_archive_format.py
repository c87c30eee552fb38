"""The archive format v2 (engine/archive/format.py): a batch's rows as one encrypted segment per
data key, deterministic (same rows and keys, same bytes and name), a dry run naming the object
without data, verify catching what is wrong, the legacy v1 (gzip) objects still read, and no
address anywhere in a manifest or an object."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import secrets
import uuid

import pytest
from cryptography.exceptions import InvalidTag

from retention_pipelines.engine.archive.format import (
    BLOB_MAGIC,
    FORMAT,
    LEGACY_FORMAT,
    blob_key_id,
    decrypt_blob,
    encode_batch,
    read_manifest,
    read_rows,
    segments,
    verify,
)
from retention_pipelines.engine.archive.keys import DataKey
from retention_pipelines_tests.support.archives import encode_v1, sealed_whole

DOMAIN, VERSION, DAY = "email_blacklist", "2026-11-30.1", dt.date(2026, 11, 30)
NAME_KEY = b"n" * 32
COLUMNS = ["id", "email", "reason", "created_at"]
ANN, BOB = "Ann.Subject@Example.org", "bob.other@example.net"


def data_key() -> DataKey:
    return DataKey(secrets.token_hex(16), secrets.token_bytes(32))


def row(email: str | None, reason: str = "chargeback") -> tuple:
    return (str(uuid.uuid4()), email, reason, dt.datetime(2026, 8, 1, 12, 0, tzinfo=dt.UTC))


class Batch:
    """Two rows of Ann, two of Bob and one of nobody, interleaved as a keyset walk hands them."""

    def __init__(self):
        self.ann, self.bob, self.nobody = data_key(), data_key(), data_key()
        self.rows = [row(ANN), row(BOB), row(None, "manual"), row(ANN.lower()), row(BOB, "refund_abuse")]
        self.owners = [self.ann, self.bob, self.nobody, self.ann, self.bob]
        self.ids = [r[0] for r in self.rows]

    def encode(self, row_keys="owners", name_key=NAME_KEY, domain=DOMAIN):
        keys = self.owners if row_keys == "owners" else row_keys
        return encode_batch(domain, VERSION, COLUMNS, self.rows, self.ids, DAY, name_key, keys)

    def keys(self, *which: DataKey) -> dict[str, bytes | None]:
        return {k.key_id: k.key for k in which}

    def as_read(self, index: int) -> dict:
        record_id, email, reason, created = self.rows[index]
        return {"id": record_id, "email": email, "reason": reason, "created_at": created.isoformat()}


@pytest.fixture
def batch() -> Batch:
    return Batch()


def with_sha(manifest: dict, data: bytes) -> dict:
    """The manifest rewritten to match changed data: what someone who changes both would do."""
    return {**manifest, "sha256": hashlib.sha256(data).hexdigest()}


def rebuild(found: list[dict]) -> bytes:
    return "".join(json.dumps(s, separators=(",", ":")) + "\n" for s in found).encode()


# segments and keys ------------------------------------------------------------------------------------
def test_two_subjects_and_no_subject_give_three_segments_each_read_only_with_its_key(batch):
    encoded = batch.encode()
    manifest = read_manifest(encoded.manifest)
    assert manifest["format"] == FORMAT and manifest["rows"] == 5 and encoded.rows == 5
    assert [s["key"] for s in segments(encoded.data)] == [batch.ann.key_id, batch.bob.key_id, batch.nobody.key_id]
    assert manifest["segments"] == [{"key": batch.ann.key_id, "rows": 2}, {"key": batch.bob.key_id, "rows": 2},
                                    {"key": batch.nobody.key_id, "rows": 1}]
    # The record ids are listed in segment order, so that each id's segment (its key) is known.
    assert manifest["record_ids"] == [batch.ids[i] for i in (0, 3, 1, 4, 2)]
    assert manifest["sha256"] == encoded.sha256 == hashlib.sha256(encoded.data).hexdigest()

    everything = dict(read_rows(encoded.data, manifest, batch.keys(batch.ann, batch.bob, batch.nobody)))
    assert everything == {batch.ids[i]: batch.as_read(i) for i in range(5)}
    for only, readable in ((batch.ann, {0, 3}), (batch.bob, {1, 4}), (batch.nobody, {2})):
        # With one key only, only that key's rows read; the others are there, unreadable.
        read = dict(read_rows(encoded.data, manifest, batch.keys(only)))
        assert set(read) == set(batch.ids)
        assert {rid for rid, value in read.items() if value is not None} == {batch.ids[i] for i in readable}
        # A destroyed key (None) reads as nothing, like an unknown one.
        gone = dict(read_rows(encoded.data, manifest, {**batch.keys(batch.ann, batch.bob, batch.nobody),
                                                        only.key_id: None}))
        assert {rid for rid, value in gone.items() if value is None} == {batch.ids[i] for i in readable}
    assert verify(encoded.data, manifest, batch.keys(batch.ann, batch.bob, batch.nobody)) is None


def test_a_segment_does_not_open_with_another_key_or_in_another_domain(batch):
    encoded = batch.encode()
    manifest = read_manifest(encoded.manifest)
    swapped = {batch.ann.key_id: batch.bob.key}
    with pytest.raises(InvalidTag):
        list(read_rows(encoded.data, manifest, swapped))
    moved = {**manifest, "domain": "quiz_responses"}  # the domain is bound into every segment
    with pytest.raises(InvalidTag):
        list(read_rows(encoded.data, moved, batch.keys(batch.ann)))


def test_the_same_rows_under_the_same_keys_give_the_same_bytes_and_name(batch):
    first, second = batch.encode(), batch.encode()
    assert (first.key, first.manifest_key, first.data, first.manifest, first.sha256) == (
        second.key, second.manifest_key, second.data, second.manifest, second.sha256)
    assert first.key.startswith(f"{DOMAIN}/2026/11/30/") and first.key.endswith(".jsonl.enc")
    assert first.manifest_key == first.key + ".manifest.json"
    # Another key for Ann: other bytes, the same name (the name is of the rows, not the ciphertext).
    rekeyed = batch.encode([data_key() if k is batch.ann else k for k in batch.owners])
    assert rekeyed.key == first.key and rekeyed.data != first.data
    # Other rows, or another name key: another name.
    assert Batch().encode().key != first.key
    assert batch.encode(name_key=b"m" * 32).key != first.key
    # The column order given does not matter: lines are written with sorted keys.
    order = [2, 0, 3, 1]
    shuffled = encode_batch(DOMAIN, VERSION, [COLUMNS[i] for i in order], [[r[i] for i in order] for r in batch.rows],
                            batch.ids, DAY, NAME_KEY, batch.owners)
    assert shuffled.key == first.key and shuffled.data == first.data


def test_a_dry_run_names_the_same_object_and_makes_no_data(batch):
    written = batch.encode()
    dry = batch.encode(row_keys=None)
    assert (dry.key, dry.manifest_key, dry.rows) == (written.key, written.manifest_key, 5)
    assert (dry.data, dry.manifest, dry.sha256) == (b"", b"", "")


# verify ----------------------------------------------------------------------------------------------------
def test_verify_catches_a_changed_byte(batch):
    encoded = batch.encode()
    manifest = read_manifest(encoded.manifest)
    for position in (0, len(encoded.data) // 2, len(encoded.data) - 2):
        changed = bytearray(encoded.data)
        changed[position] ^= 0x01
        problem = verify(bytes(changed), manifest)
        assert problem is not None and "sha256" in problem and "differs" in problem
    assert verify(encoded.data, manifest) is None


def test_verify_catches_segments_swapped_or_dropped(batch):
    encoded = batch.encode()
    manifest = read_manifest(encoded.manifest)
    found = segments(encoded.data)
    for changed in (rebuild([found[1], found[0], found[2]]), rebuild(found[:2]), rebuild([*found, found[0]])):
        assert "sha256" in verify(changed, manifest)
        assert verify(changed, with_sha(manifest, changed)) == "its segments differ from the manifest's"


def test_verify_catches_a_wrong_row_count(batch):
    encoded = batch.encode()
    manifest = read_manifest(encoded.manifest)
    assert verify(encoded.data, {**manifest, "rows": 4}) == "5 rows in the object, 4 in the manifest"
    # A segment that claims a row more than it holds, in the object and the manifest alike: only
    # decrypting it (with the keys) shows the difference.
    found = segments(encoded.data)
    found[0] = {**found[0], "rows": 3}
    data = rebuild(found)
    lying = with_sha({**manifest, "rows": 6, "segments": [{"key": s["key"], "rows": s["rows"]} for s in found]}, data)
    assert verify(data, lying) is None  # without the keys the counts agree with each other
    problem = verify(data, lying, batch.keys(batch.ann, batch.bob, batch.nobody))
    assert problem == f"segment of key {batch.ann.key_id}: 2 rows decrypted, 3 written"


def test_verify_with_the_keys_reports_a_segment_that_does_not_decrypt(batch):
    """An object whose segment was changed (its manifest digest along with it), or read with a key
    that is not the one it was written with, is reported as not readable: a problem for its
    manifest's object, not an exception out of the check."""
    encoded = batch.encode()
    manifest = read_manifest(encoded.manifest)
    all_keys = batch.keys(batch.ann, batch.bob, batch.nobody)
    found = segments(encoded.data)
    ciphertext = bytearray(base64.b64decode(found[1]["data"]))
    ciphertext[5] ^= 0x01
    found[1] = {**found[1], "data": base64.b64encode(bytes(ciphertext)).decode()}
    tampered = rebuild(found)
    assert verify(tampered, with_sha(manifest, tampered)) is None  # the digest and counts alone cannot tell

    for data, keys in ((tampered, all_keys), (encoded.data, {**all_keys, batch.bob.key_id: data_key().key})):
        problem = verify(data, with_sha(manifest, data), keys)
        assert problem is not None and batch.bob.key_id in problem
    # A destroyed key (None) is no problem: its rows are meant to be unreadable.
    assert verify(encoded.data, manifest, {**all_keys, batch.bob.key_id: None}) is None


# legacy v1 objects ---------------------------------------------------------------------------------------
def test_a_v1_object_and_its_manifest_still_read_and_verify(batch):
    rows = [batch.as_read(i) for i in range(3)]
    _, data, raw_manifest = encode_v1(rows, batch.ids[:3])
    manifest = read_manifest(raw_manifest)
    assert manifest["format"] == LEGACY_FORMAT
    assert verify(data, manifest) is None and verify(data, manifest, {}) is None
    assert list(read_rows(data, manifest, {})) == list(zip(batch.ids[:3], rows))
    changed = bytearray(data)
    changed[-5] ^= 0x01
    assert "sha256" in verify(bytes(changed), manifest)
    assert verify(data, {**manifest, "rows": 4}) == "3 rows in the object, 4 in the manifest"


def test_a_manifest_of_no_known_format_is_refused():
    with pytest.raises(ValueError, match="not a retention-archive/2 manifest"):
        read_manifest(json.dumps({"format": "retention-archive/9", "rows": 1}).encode())


# no personal data ------------------------------------------------------------------------------------------
def test_no_address_appears_in_the_manifest_or_the_object(batch):
    encoded = batch.encode()
    blobs = {rid: {"archive_key": f"meal_plans/blobs/{rid}", "sha256": "0" * 64, "key": batch.ann.key_id}
             for rid in batch.ids}
    with_blobs = encode_batch(DOMAIN, VERSION, COLUMNS, batch.rows, batch.ids, DAY, NAME_KEY, batch.owners,
                              blobs=blobs)
    for raw in (encoded.data, encoded.manifest, with_blobs.data, with_blobs.manifest,
                encoded.key.encode(), encoded.manifest_key.encode()):
        lowered = raw.lower()
        for address in (ANN, BOB):
            assert address.lower().encode() not in lowered
            assert address.split("@")[0].lower().encode() not in lowered  # nor the local part alone
        assert b"@" not in raw
    # The rows are there all the same, for the key holders.
    read = dict(read_rows(encoded.data, read_manifest(encoded.manifest), batch.keys(batch.ann, batch.bob)))
    assert read[batch.ids[0]]["email"] == ANN and read[batch.ids[1]]["email"] == BOB


# archived objects (PDFs) ----------------------------------------------------------------------------------
def test_an_archived_object_of_version_2_is_read_with_its_subjects_key_and_names_it():
    pdf = b"%PDF-1.7 a meal plan for Ann\n%%EOF\n"
    key = data_key()
    sealed = sealed_whole(pdf, key)  # as version 2 wrote a copy, whole
    assert sealed.startswith(BLOB_MAGIC) and blob_key_id(sealed) == key.key_id
    assert pdf not in sealed and b"Ann" not in sealed
    assert decrypt_blob(sealed, key.key, "meal_plans") == pdf
    with pytest.raises(InvalidTag):
        decrypt_blob(sealed, data_key().key, "meal_plans")
    with pytest.raises(InvalidTag):
        decrypt_blob(sealed, key.key, "email_blacklist")
    with pytest.raises(ValueError, match="not an encrypted archive object"):
        blob_key_id(pdf)
