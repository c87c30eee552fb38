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

from retention_pipelines.engine.archive.format import (
    LEGACY_FORMAT,
    blob_key_id,
    decrypt_blob,
    read_manifest,
    read_rows,
)
from retention_pipelines.engine.archive.keys import ArchiveKeys
from retention_pipelines.stores import AppDatabase, load_settings
from retention_pipelines.stores.archive import LocalArchiveStore

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
    """An archived object (a PDF) decrypted with the configured keys; None once its key is destroyed."""
    key = configured_keys(database).unwrap({blob_key_id(sealed)})[blob_key_id(sealed)]
    return None if key is None else decrypt_blob(sealed, key, domain)


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
