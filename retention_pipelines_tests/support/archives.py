"""Archive stores as the tests read them: every object, the rows and PDFs in them, their manifests;
and objects as a store gone bad or version 1 of the format gives them."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlparse

from retention_pipelines.engine.archive.chunked import HEADER_BYTES, decrypted, key_id_of
from retention_pipelines.engine.archive.format import (
    BLOB_MAGIC,
    LEGACY_FORMAT,
    read_manifest,
    read_rows,
)
from retention_pipelines.engine.archive.keys import ArchiveKeys, DataKey, seal
from retention_pipelines.stores import AppDatabase, load_settings
from retention_pipelines.stores.archive import ArchiveStore, LocalArchiveStore, S3ArchiveStore

# What version 1 of the format archived: email_blacklist's rows, of these columns.
V1_DOMAIN = "email_blacklist"
V1_COLUMNS = ["id", "email", "reason", "created_at"]


def configured_keys(database: AppDatabase) -> ArchiveKeys:
    """The archive keys of the tests' configuration, made as the resource and the CLI make them."""
    settings = load_settings()
    return ArchiveKeys(database, settings.resolved_archive_master_key(), settings.resolved_erasure_hash_key())


def archive_objects(url: str) -> dict[str, bytes]:
    """Every object of an archive store, by key relative to the store's root (prefix removed)."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        root = Path(parsed.path)
        if not root.exists():
            return {}
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    import boto3

    client = boto3.client("s3")
    prefix = parsed.path.strip("/")
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=parsed.netloc):
        for item in page.get("Contents", []):
            key = item["Key"]
            relative = key[len(prefix) + 1:] if prefix and key.startswith(prefix + "/") else key
            found[relative] = client.get_object(Bucket=parsed.netloc, Key=key)["Body"].read()
    return found


def archived_rows(database: AppDatabase, data: bytes, manifest: dict) -> list[tuple[str, dict | None]]:
    """(record id, row) of an archive object, decrypted with the configured keys; None for a row
    whose data key is destroyed."""
    keys = configured_keys(database)
    return list(read_rows(data, manifest, keys.unwrap({s["key"] for s in manifest["segments"]})))


def archived_pdf(database: AppDatabase, sealed: bytes, domain: str = "meal_plans") -> bytes | None:
    """An archived object (a PDF, either version) decrypted with the configured keys; None once its
    key is destroyed."""
    key = configured_keys(database).unwrap({key_id_of(sealed)})[key_id_of(sealed)]
    return None if key is None else opened_pdf(sealed, key, domain)


def opened_pdf(sealed: bytes, key: bytes, domain: str = "meal_plans") -> bytes:
    """An archived object (a PDF, either version) decrypted with its data key."""
    return b"".join(decrypted([sealed], key, domain))


def sealed_whole(pdf: bytes, data_key: DataKey, domain: str = "meal_plans") -> bytes:
    """A PDF's archived copy as version 2 wrote it, encrypted whole (before copies were chunked)."""
    nonce, ciphertext = seal(data_key.key, pdf, f"retention-archive/2|{domain}|{data_key.key_id}".encode())
    return BLOB_MAGIC + data_key.key_id.encode() + nonce + ciphertext


def manifests(objects: dict[str, bytes]) -> dict[str, dict]:
    """Manifest of each data object, by the data object's key."""
    result = {}
    for key, raw in objects.items():
        if key.endswith(".manifest.json"):
            manifest = read_manifest(raw)
            assert manifest["object"] == key.removesuffix(".manifest.json")
            result[manifest["object"]] = manifest
    return result


class CorruptingStore(LocalArchiveStore):
    """A folder whose reads return altered data objects (not manifests): a store gone bad."""

    def get(self, key: str) -> bytes:
        data = super().get(key)
        if key.endswith(".manifest.json"):
            return data
        return data[:-1] + bytes([data[-1] ^ 0xFF])

    def chunks(self, key: str):
        yield self.get(key)  # streamed reads go bad alike


def encode_v1(rows: list[dict], record_ids: list[str]) -> tuple[str, bytes, bytes]:
    """An object and its manifest as version 1 wrote them (before the encrypted archives): gzip'd
    JSON lines (mtime 0), named by the data's sha256."""
    lines = "".join(json.dumps(r, sort_keys=True, separators=(",", ":")) + "\n" for r in rows)
    data = gzip.compress(lines.encode(), compresslevel=1, mtime=0)
    digest = hashlib.sha256(data).hexdigest()
    key = f"{V1_DOMAIN}/2026/08/01/{digest[:40]}.jsonl.gz"
    manifest = {"format": LEGACY_FORMAT, "domain": V1_DOMAIN, "policy_version": "2026-08-01.1", "codec": "gzip",
                "object": key, "rows": len(rows), "sha256": digest, "columns": V1_COLUMNS, "record_ids": record_ids}
    return key, data, json.dumps(manifest, sort_keys=True).encode()


OLD = f"email_blacklist/2025/01/01/{'3' * 40}.jsonl.gz"  # an archive object long past its keep_for


def archive_with_an_old_batch(database: AppDatabase) -> LocalArchiveStore:
    """The configured local archive with one batch (object and manifest) written 400 days ago."""
    store = LocalArchiveStore(Path(urlparse(os.environ["RETENTION_ARCHIVE_URL"]).path))
    written = (database.now() - timedelta(days=400)).timestamp()
    for key in (OLD, OLD + ".manifest.json"):
        store.put(key, b"archived rows")
        os.utime(store.root / key, (written, written))
    return store


# How a test damages an archived PDF (format 3): each is refused when the copy is verified or read.
TAMPERINGS = ("flipped byte", "truncated", "chunks swapped", "last chunk dropped")


def chunk_records(stored: bytes) -> tuple[bytes, list[bytes]]:
    """An archived PDF's header and its chunk records (length and ciphertext), as stored."""
    records, at = [], HEADER_BYTES
    while at < len(stored):
        size = int.from_bytes(stored[at:at + 4], "big")
        records.append(stored[at:at + 4 + size])
        at += 4 + size
    return stored[:HEADER_BYTES], records


def tampered(pieces: list[bytes], how: str) -> list[bytes]:
    """The pieces of an archived PDF (its header, then a piece per chunk, as the engine writes
    them) damaged one of the TAMPERINGS way; it needs two chunks of data at least."""
    header, *records = pieces
    if how == "flipped byte":
        records[1] = records[1][:100] + bytes([records[1][100] ^ 0x01]) + records[1][101:]
    elif how == "truncated":
        records = records[:1] + [records[1][:len(records[1]) // 2]]
    elif how == "chunks swapped":
        records[0], records[1] = records[1], records[0]
    elif how == "last chunk dropped":
        records = records[:-1]
    else:
        raise ValueError(how)
    return [header, *records]


class TamperingArchiveStore(S3ArchiveStore):
    """An S3 archive whose streamed writes are damaged between the engine and the store (one of
    TAMPERINGS): the store keeps, and vouches for, other bytes than the engine encrypted."""

    def __init__(self, *args, how: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.how = how

    def put_cold_streamed(self, key, chunks, retain_until=None):
        return super().put_cold_streamed(key, tampered(list(chunks), self.how), retain_until=retain_until)


def replace_copy(store: ArchiveStore, record_id: str, data: bytes, domain: str = "meal_plans",
                 in_manifests: bool = True) -> None:
    """Other bytes in place of a PDF's archived copy; with in_manifests, named by their digest in
    every manifest that listed the copy, as if they had been archived so (only the copy's own
    format can then tell)."""
    key = f"{domain}/blobs/{record_id}"
    before, after = hashlib.sha256(store.get(key)).hexdigest(), hashlib.sha256(data).hexdigest()
    store.put_cold(key, data)
    if not in_manifests:
        return
    for manifest_key in [k for k in store.keys(f"{domain}/") if k.endswith(".manifest.json")]:
        manifest = json.loads(store.get(manifest_key))
        where = manifest.get("blobs", {}).get(record_id)
        if where and where.get("sha256") == before:
            where["sha256"] = after
            store.put(manifest_key, json.dumps(manifest, sort_keys=True).encode())
