"""Archives written before they were encrypted (format retention-archive/1: gzip'd JSON lines in
clear, PDFs copied as they were), encrypted in place so that erasure reaches them too.

An erasure destroys a subject's data key; a copy written in clear would outlive it. So before a
domain's erasure, the domain's version-1 objects are rewritten under the same names as version 2
(every row under its subject's key, or its batch's), and the subject's PDFs copied in clear are
encrypted under their key (engine/archive/chunked.py). Names are kept: the audit log points at
them. Each object is read back and verified before the next; an object already encrypted is left
alone, so this is safe to repeat and cheap once done (a listing of the batch objects' names).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json

import sqlalchemy as sa

from retention_pipelines.engine.archive.chunked import MAGIC, SealedObject
from retention_pipelines.engine.archive.format import (
    BLOB_MAGIC,
    LEGACY_FORMAT,
    encode_batch,
    read_manifest,
    read_rows,
    verify,
)
from retention_pipelines.engine.retention.results import ArchiveVerificationFailed
from retention_pipelines.engine.retention.selection import Selection
from retention_pipelines.logs import get_logger

log = get_logger("engine")
LEGACY_SUFFIX = ".jsonl.gz.manifest.json"


def upgrade_legacy_batches(engine) -> int:
    """Every version-1 batch object of the engine's domain, rewritten as version 2; how many."""
    store, policy = engine.archive_store, engine.policy
    # Batch objects are <domain>/YYYY/MM/DD/…: the years' prefix leaves out the PDFs (<domain>/blobs/…).
    manifests = [key for key in store.keys(f"{policy.name}/2") if key.endswith(LEGACY_SUFFIX)]
    upgraded = 0
    for manifest_key in manifests:
        manifest = read_manifest(store.get(manifest_key))
        if manifest["format"] != LEGACY_FORMAT:
            continue  # upgraded by an earlier, interrupted run
        key = manifest["object"]
        rows = [row for _, row in read_rows(store.get(key), manifest, {})]
        subjects = _subjects(engine, manifest["record_ids"], rows)
        values = [[row.get(column) for column in manifest["columns"]] for row in rows]
        row_keys = engine.row_keys(list(subjects), manifest["record_ids"])
        encoded = encode_batch(policy.name, manifest["policy_version"], manifest["columns"], values,
                               manifest["record_ids"], _day(key), engine.keys.hash_key, row_keys)
        new_manifest = {**json.loads(encoded.manifest), "object": key, "upgraded_from": LEGACY_FORMAT}
        store.put(key, encoded.data)
        store.put(manifest_key, json.dumps(new_manifest, sort_keys=True).encode())
        problem = verify(store.get(key), read_manifest(store.get(manifest_key)), {k.key_id: k.key for k in row_keys})
        if problem:
            raise ArchiveVerificationFailed(f"{store.uri(key)}: encrypting a version-1 object: {problem}",
                                            store.uri(key))
        upgraded += 1
    if upgraded:
        log.info(f"{policy.name}: {upgraded} archive objects of version 1 encrypted in place",
                 extra={"domain": policy.name, "step": "upgrade", "archive_objects": upgraded})
    return upgraded


def upgrade_legacy_blobs(engine, selection: Selection) -> int:
    """The PDFs of the rows `selection` chooses (a subject's), archived in clear by version 1,
    encrypted in place under their subject's key; how many."""
    if not engine.policy.blob_key_column:
        return 0
    store, policy, table = engine.archive_store, engine.policy, engine.table
    subject = table.table.c[policy.subject_column]
    with engine.database.connect() as connection:
        rows = connection.execute(sa.select(table.pk, subject).where(*table.due(None, selection))).all()
    upgraded = 0
    for pk, address in rows:
        record_id = table.record_id(pk)
        key = f"{policy.name}/blobs/{record_id}"
        if not store.exists(key):
            continue
        chunks = store.chunks(key)
        first = next(chunks, b"")
        if first.startswith((BLOB_MAGIC, MAGIC)):
            chunks.close()
            continue
        [data_key] = engine.row_keys([address], [record_id])
        # Read and written chunk by chunk: the copy in clear is replaced only once its encrypted
        # copy is whole (the stores write whole or nothing).
        sealed = SealedObject(itertools.chain([first], chunks), data_key, policy.name)
        if store.put_cold_streamed(key, sealed) != sealed.sha256:
            raise ArchiveVerificationFailed(f"{store.uri(key)}: encrypting a version-1 copy failed", store.uri(key))
        upgraded += 1
    return upgraded


def _day(key: str) -> dt.date:
    """The day in a batch object's name (<domain>/YYYY/MM/DD/…); the name itself is kept."""
    year, month, day = key.split("/")[1:4]
    return dt.date(int(year), int(month), int(day))


def _subjects(engine, record_ids: list[str], rows: list[dict]) -> list[str | None]:
    """Each archived row's subject: from the row where it was archived, else from the table where
    the row still is (a redacted purchase row keeps its address), else none (a batch key)."""
    column = engine.policy.subject_column
    if not column:
        return [None] * len(rows)
    found = [row.get(column) for row in rows]
    missing = [engine.table.pk_value(rid) for rid, subject in zip(record_ids, found) if subject is None]
    missing = [pk for pk in missing if pk is not None]
    if missing:
        table = engine.table
        with engine.database.connect() as connection:
            kept = {table.record_id(pk): subject for pk, subject in connection.execute(
                sa.select(table.pk, table.table.c[column]).where(table.pk.in_(missing)))}
        found = [subject if subject is not None else kept.get(rid) for rid, subject in zip(record_ids, found)]
    return found


__all__ = ["upgrade_legacy_batches", "upgrade_legacy_blobs"]
