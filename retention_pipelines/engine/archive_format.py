"""The archive format: a batch of rows as gzip'd JSON lines, and its manifest.

Objects are content-addressed (the key holds the data's sha256), so a rerun that archives the
same rows again rewrites the same object instead of adding a second copy.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import gzip
import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

FORMAT = "retention-archive/1"


def _json_value(value: object) -> object:
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (uuid.UUID, decimal.Decimal)):
        return str(value)
    if isinstance(value, (bytes, memoryview)):
        return base64.b64encode(bytes(value)).decode()
    raise TypeError(f"cannot archive a value of type {type(value).__name__}")


@dataclass(frozen=True)
class EncodedBatch:
    key: str
    manifest_key: str
    data: bytes
    manifest: bytes
    sha256: str
    rows: int


def _line(keys: Sequence[str], raw: Sequence[bool], row: Sequence[object]) -> str:
    fields = (f"{key}:{_embed(value) if is_raw else _dumps(value)}" for key, is_raw, value in zip(keys, raw, row))
    return "{" + ",".join(fields) + "}\n"


def _embed(json_text: str | None) -> str:
    """JSON text as the database keeps it, on one line: PostgreSQL's jsonb text already is; JSON
    kept as written (json, SQLite) may span lines or not be JSON at all, and is re-encoded."""
    if json_text is None:
        return "null"
    if "\n" not in json_text and "\r" not in json_text:
        return json_text
    try:
        return _ENCODER.encode(json.loads(json_text))
    except ValueError:
        return _quote(json_text)


_ENCODER = json.JSONEncoder(default=_json_value, separators=(",", ":"))
_quote = json.encoder.encode_basestring_ascii


def _dumps(value: object) -> str:
    """One value as JSON; the common cases (text, instants, null) without the general encoder."""
    if isinstance(value, str):
        return _quote(value)
    if value is None:
        return "null"
    if isinstance(value, dt.datetime):
        return f'"{value.isoformat()}"'
    return _ENCODER.encode(value)


def encode_batch(domain: str, policy_version: str, columns: Sequence[str], rows: Sequence[Sequence[object]],
                 record_ids: Sequence[str], day: dt.date, raw_json: set[str] = frozenset(),
                 blobs: dict | None = None) -> EncodedBatch:
    """Rows → JSON lines (keys sorted; columns in raw_json hold JSON text, embedded as it is) →
    gzip (mtime 0, so the same rows give the same bytes) → key and manifest."""
    order = sorted(range(len(columns)), key=lambda i: columns[i])
    keys = [json.dumps(columns[i]) for i in order]
    raw = [columns[i] in raw_json for i in order]
    lines = "".join(_line(keys, raw, [row[i] for i in order]) for row in rows)
    data = gzip.compress(lines.encode(), compresslevel=1, mtime=0)
    digest = hashlib.sha256(data).hexdigest()
    key = f"{domain}/{day:%Y/%m/%d}/{digest[:40]}.jsonl.gz"
    manifest = {
        "format": FORMAT, "domain": domain, "policy_version": policy_version, "codec": "gzip",
        "object": key, "rows": len(rows), "sha256": digest, "columns": list(columns),
        "record_ids": list(record_ids),
        **({"blobs": blobs} if blobs is not None else {}),  # where each row's object was archived
    }
    return EncodedBatch(key, key + ".manifest.json", data, json.dumps(manifest, sort_keys=True).encode(), digest,
                        len(rows))


def read_manifest(raw: bytes) -> dict:
    manifest = json.loads(raw)
    if manifest.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} manifest")
    return manifest


def verify(data: bytes, manifest: dict) -> str | None:
    """None when the object matches its manifest; otherwise what is wrong (no row content)."""
    digest = hashlib.sha256(data).hexdigest()
    if digest != manifest["sha256"]:
        return f"sha256 {digest[:12]}… differs from the manifest's {manifest['sha256'][:12]}…"
    lines = gzip.decompress(data).count(b"\n")
    if lines != manifest["rows"]:
        return f"{lines} rows in the object, {manifest['rows']} in the manifest"
    return None
