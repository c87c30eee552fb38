"""Data keys of the encrypted archives: crypto-shredding (GDPR Art. 17 for archived copies).

Every archived row is encrypted (AES-256-GCM) with a data key: the key of the row's subject
(the keyed hash of the policy's subject column), or, for a row without a subject, a key of its
batch. Data keys live in `retention_data_keys` only wrapped (AES-256-GCM) by the master key from
configuration, so that neither the database nor the archive store alone can read an archive.

Erasing a subject destroys their data key in the transaction that audits it: every archived copy
of their rows, in every object, wherever it was copied and however long it is kept (even under an
S3 Object Lock), can no longer be read, while the other rows of the same objects still can.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterator
from dataclasses import dataclass

import sqlalchemy as sa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from retention_pipelines.engine.audit.entries import Action, AuditStamp, write_entries
from retention_pipelines.engine.identity.subjects import normalise_address
from retention_pipelines.schema import data_keys
from retention_pipelines.stores import AppDatabase, Dialect

KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12


def subject_hash(value: str, hash_key: bytes) -> str:
    """The keyed hash (HMAC-SHA256) that names a subject without their address: of the address as
    `normalise_address` makes it, so the same for every spelling of one subject ('Ann@Example.org ',
    'ann@example.org', 'ＡＮＮ@example.org'), and the one a completed erasure request keeps."""
    return hmac.new(hash_key, normalise_address(value).encode(), hashlib.sha256).hexdigest()


def legacy_subject_hash(value: str, hash_key: bytes) -> str:
    """The hash that named a subject's key before `normalise_address` (the address stripped and in
    lower case): equal to subject_hash for an ASCII address, different where NFKC, the case fold or
    an invisible character at an end changes it. Keys made under it still encrypt archives written
    then, so an erasure destroys the subject's keys under both (ArchiveKeys.subject_hashes)."""
    return hmac.new(hash_key, value.strip().lower().encode(), hashlib.sha256).hexdigest()


def seal(key: bytes, plaintext: bytes, associated: bytes) -> tuple[bytes, bytes]:
    """AES-GCM with a synthetic nonce (an HMAC of the plaintext under the key): the same rows under
    the same key give the same bytes, so that a rerun rewrites the same content-addressed archive
    object instead of adding a second copy. The nonce repeats only for identical plaintexts, which
    then reveal only that they are identical (the property of AES-GCM-SIV)."""
    nonce = hmac.digest(key, associated + b"\0" + plaintext, "sha256")[:NONCE_BYTES]
    return nonce, AESGCM(key).encrypt(nonce, plaintext, associated)


def open_sealed(key: bytes, nonce: bytes, ciphertext: bytes, associated: bytes) -> bytes:
    return AESGCM(key).decrypt(nonce, ciphertext, associated)


@dataclass(frozen=True)
class DataKey:
    key_id: str
    key: bytes


class ArchiveKeys:
    """The data keys, in the app database, wrapped by the master key. Whoever reads the
    configuration (the Dagster resource, the CLI) makes them from RETENTION_ARCHIVE_MASTER_KEY and
    RETENTION_ERASURE_HASH_KEY; the engine is handed them."""

    def __init__(self, database: AppDatabase, master_key: bytes, hash_key: bytes):
        if len(master_key) != KEY_BYTES:
            raise ValueError(f"the archive master key must be {KEY_BYTES} bytes")
        self.database, self._master, self.hash_key = database, AESGCM(master_key), hash_key

    def subject_hash(self, value: str) -> str:
        return subject_hash(value, self.hash_key)

    def subject_hashes(self, *stored: str) -> set[str]:
        """Every name a key of these spellings of one subject may have: today's hash and, for keys
        made before the one normalisation, each spelling's legacy hash."""
        return {h for value in stored for h in (subject_hash(value, self.hash_key),
                                                legacy_subject_hash(value, self.hash_key))}

    # keys for writing ----------------------------------------------------------------------------
    def for_subjects(self, hashes: set[str]) -> dict[str, DataKey]:
        """The live key of each subject, made for those who have none yet (committed before any
        archive is written with it; a key made by a run killed later encrypts nothing, harmlessly).
        Keys are made for all and inserted first: most subjects of a retention run are archived
        for the first time, and the few who have a key already are then read (one query fewer
        per batch; a key made in vain costs a microsecond)."""
        if not hashes:
            return {}
        ordered = sorted(hashes)
        made = dict(zip(ordered, self._new_keys(len(ordered))))
        with self.database.begin() as connection:
            # Another run may make the same subject's key at the same moment: one is kept.
            kept = _insert_subject_keys(connection, [(h, row) for h, (row, _) in made.items()])
        found = {h: made[h][1] for h in kept}
        if len(found) < len(ordered):
            found.update(self.live_subject_keys(set(ordered) - set(found)))
        return found

    def for_batch(self, batch: str) -> DataKey:
        """The key of a batch's rows that have no subject, named by what the batch is, so that a
        rerun over the same rows finds the same key."""
        with self.database.begin() as connection:
            connection.execute(_insert_once(connection, "batch"), [self._new_key(batch=batch)[0]])
            row = connection.execute(sa.select(data_keys.c.key_id, data_keys.c.wrapped_key).where(
                data_keys.c.batch == batch)).one()
        return DataKey(row.key_id, self._unwrap(row.key_id, row.wrapped_key))

    # keys for reading ----------------------------------------------------------------------------
    def unwrap(self, key_ids: set[str]) -> dict[str, bytes | None]:
        """Each key by id; None for a destroyed one (or one this database never had)."""
        result: dict[str, bytes | None] = dict.fromkeys(key_ids)
        ids = sorted(key_ids)
        with self.database.connect() as connection:
            for start in range(0, len(ids), 1000):
                for key_id, wrapped in connection.execute(sa.select(data_keys.c.key_id, data_keys.c.wrapped_key).where(
                        data_keys.c.key_id.in_(ids[start:start + 1000]))):
                    result[key_id] = None if wrapped is None else self._unwrap(key_id, wrapped)
        return result

    # erasure ----------------------------------------------------------------------------------------
    def destroy_subject(self, connection: sa.Connection, hashed_subject: str, run_id: str, policy_version: str,
                        detail: str) -> list[str]:
        """Destroy the subject's live key, in the caller's transaction, with its audit entry (domain
        'gdpr', action 'key_destroyed', the key id as record id). Returns the key ids destroyed."""
        destroyed = connection.execute(sa.update(data_keys).where(
            data_keys.c.subject_hash == hashed_subject, data_keys.c.destroyed_at.is_(None)).values(
            wrapped_key=None, destroyed_at=sa.func.now()).returning(data_keys.c.key_id)).scalars().all()
        stamp = AuditStamp("gdpr", Action.KEY_DESTROYED, run_id, policy_version, detail=detail)
        write_entries(connection, [stamp.row(key_id) for key_id in destroyed])
        return list(destroyed)

    # ---------------------------------------------------------------------------------------------------
    def live_subject_keys(self, hashes: set[str]) -> dict[str, DataKey]:
        """The live keys of these subjects, making none."""
        found = {}
        with self.database.connect() as connection:
            for chosen in _any_of(connection, data_keys.c.subject_hash, sorted(hashes)):
                for row in connection.execute(sa.select(
                        data_keys.c.subject_hash, data_keys.c.key_id, data_keys.c.wrapped_key).where(
                        chosen, data_keys.c.destroyed_at.is_(None))):
                    found[row.subject_hash] = DataKey(row.key_id, self._unwrap(row.key_id, row.wrapped_key))
        return found

    def _new_key(self, subject_hash: str | None = None, batch: str | None = None) -> tuple[dict, DataKey]:
        """A fresh random data key: (its row, wrapped by the master key; the key itself)."""
        row, key = self._new_keys(1)[0]
        return {**row, "subject_hash": subject_hash, "batch": batch}, key

    def _new_keys(self, count: int) -> list[tuple[dict, DataKey]]:
        """`count` fresh random data keys, each (its row: id and wrapped key; the key itself). The
        randomness is drawn in one call: a batch of 10,000 new subjects makes 10,000 keys."""
        size = 16 + KEY_BYTES + NONCE_BYTES
        random = os.urandom(size * count)
        made = []
        for start in range(0, size * count, size):
            key_id = random[start:start + 16].hex()
            key = random[start + 16:start + 16 + KEY_BYTES]
            nonce = random[start + 16 + KEY_BYTES:start + size]
            wrapped = nonce + self._master.encrypt(nonce, key, key_id.encode())
            made.append(({"key_id": key_id, "wrapped_key": wrapped}, DataKey(key_id, key)))
        return made

    def _unwrap(self, key_id: str, wrapped: bytes) -> bytes:
        from cryptography.exceptions import InvalidTag

        try:
            return self._master.decrypt(bytes(wrapped[:NONCE_BYTES]), bytes(wrapped[NONCE_BYTES:]), key_id.encode())
        except InvalidTag:
            raise ValueError(f"data key {key_id} cannot be unwrapped: the archive master key "
                             "(RETENTION_ARCHIVE_MASTER_KEY) is not the one it was made with") from None


def _insert_once(connection: sa.Connection, owner: str) -> sa.Insert:
    insert = Dialect.of(connection).upsert(data_keys)
    if owner == "subject":
        return insert.on_conflict_do_nothing(index_elements=["subject_hash"],
                                             index_where=data_keys.c.destroyed_at.is_(None))
    return insert.on_conflict_do_nothing(index_elements=["batch"])


def _insert_subject_keys(connection: sa.Connection, keys: list[tuple[str, dict]]) -> list[str]:
    """Insert (subject hash, key row) pairs, skipping subjects that have a live key by now;
    returns the hashes whose keys were inserted."""
    if Dialect.of(connection).binds_arrays:
        # One statement over arrays: SQLAlchemy's executemany (its insertmanyvalues pages of 1,000
        # rows with RETURNING) took 20 µs a key, the arrays unnested by the server take 3.
        return connection.execute(sa.text(
            "INSERT INTO retention_data_keys (key_id, subject_hash, wrapped_key) "
            "SELECT * FROM unnest(CAST(:key_ids AS text[]), CAST(:hashes AS text[]), CAST(:wrapped AS bytea[])) "
            "ON CONFLICT (subject_hash) WHERE destroyed_at IS NULL DO NOTHING RETURNING subject_hash"),
            {"key_ids": [row["key_id"] for _, row in keys], "hashes": [h for h, _ in keys],
             "wrapped": [row["wrapped_key"] for _, row in keys]}).scalars().all()
    return connection.execute(_insert_once(connection, "subject").returning(data_keys.c.subject_hash),
                              [{**row, "subject_hash": h, "batch": None} for h, row in keys]).scalars().all()


def _any_of(connection: sa.Connection, column: sa.Column, values: list[str]) -> Iterator[sa.ColumnElement[bool]]:
    """`column` among `values`: one array parameter where the database binds arrays, else lists of 1,000."""
    if Dialect.of(connection).binds_arrays:
        if values:
            yield column == sa.any_(sa.cast(sa.literal(values, sa.ARRAY(sa.Text)), sa.ARRAY(sa.Text)))
        return
    for start in range(0, len(values), 1000):
        yield column.in_(values[start:start + 1000])
