"""The archive format: a batch of rows as encrypted segments of JSON lines, and its manifest.

Each row is encrypted with a data key (engine/archive/keys.py): its subject's, or its batch's when it has
no subject, so that erasing a subject (destroying their key) makes exactly their rows unreadable.
Objects are content-addressed (the key holds the data's sha256), and encryption is deterministic
for the same rows under the same keys, so a rerun that archives the same rows again rewrites the
same object instead of adding a second copy. The manifest lists the record ids and segments (key
ids and row counts), never row content.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import gzip
import hashlib
import hmac
import json
import uuid
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag

from retention_pipelines.engine.archive.keys import DataKey, open_sealed, seal

FORMAT = "retention-archive/2"
CODEC = "zlib+aes-256-gcm"
LEGACY_FORMAT = "retention-archive/1"  # gzip'd JSON lines, unencrypted: still read


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
                 record_ids: Sequence[str], day: dt.date, name_key: bytes, row_keys: Sequence[DataKey] | None,
                 raw_json: set[str] = frozenset(), blobs: dict | None = None) -> EncodedBatch:
    """Rows → JSON lines (keys sorted; columns in raw_json hold JSON text, embedded as it is),
    grouped by data key into segments, each compressed (zlib) and encrypted (AES-256-GCM) with its
    key: one segment per subject, one for the rows without a subject. The object is one JSON line
    per segment {key, nonce, rows, data}.

    The object's name is a keyed hash (HMAC under name_key) of the rows, not of the ciphertext: the
    same rows get the same name, in a rerun and in a dry run (row_keys None), which computes the
    name and encrypts nothing; keyed, so that a name cannot confirm a guess of an erased row."""
    order = sorted(range(len(columns)), key=lambda i: columns[i])
    keys = [json.dumps(columns[i]) for i in order]
    raw = [columns[i] in raw_json for i in order]
    lines = [_line(keys, raw, [row[c] for c in order]).encode() for row in rows]
    name = hmac.new(name_key, b"".join(lines), hashlib.sha256).hexdigest()
    key = f"{domain}/{day:%Y/%m/%d}/{name[:40]}.jsonl.enc"
    if row_keys is None:
        return EncodedBatch(key, key + ".manifest.json", b"", b"", "", len(rows))
    grouped: dict[str, tuple[DataKey, list[int]]] = {}
    for index, data_key in enumerate(row_keys):
        grouped.setdefault(data_key.key_id, (data_key, []))[1].append(index)
    segments, ordered_ids, manifest_segments = [], [], []
    for key_id, (data_key, indexes) in grouped.items():
        plaintext = _compress(b"".join(lines[i] for i in indexes))
        nonce, ciphertext = seal(data_key.key, plaintext, _associated(domain, key_id))
        # The segment's JSON line written out: its values are hex, base64 and a number, nothing to
        # escape (json.dumps took a tenth of the archive's time, one segment per subject).
        segments.append(f'{{"key":"{key_id}","nonce":"{_b64(nonce)}","rows":{len(indexes)},'
                        f'"data":"{_b64(ciphertext)}"}}\n')
        ordered_ids.extend(record_ids[i] for i in indexes)
        manifest_segments.append({"key": key_id, "rows": len(indexes)})
    data = "".join(segments).encode()
    digest = hashlib.sha256(data).hexdigest()
    manifest = {
        "format": FORMAT, "domain": domain, "policy_version": policy_version, "codec": CODEC,
        "object": key, "rows": len(rows), "sha256": digest, "columns": list(columns),
        "record_ids": ordered_ids, "segments": manifest_segments,
        **({"blobs": blobs} if blobs is not None else {}),  # where each row's object was archived
    }
    return EncodedBatch(key, key + ".manifest.json", data, json.dumps(manifest, sort_keys=True).encode(), digest,
                        len(rows))


def _compress(data: bytes) -> bytes:
    """zlib at level 1 with a 4 KB window and small memory: a segment is often one row of a
    kilobyte or two, and setting up zlib's default 32 KB window and 128 KB hash cost 14 µs a
    segment against 4 (the most of an archive's time). Still a plain zlib stream for the reader."""
    compressor = zlib.compressobj(1, zlib.DEFLATED, 12, 4)
    return compressor.compress(data) + compressor.flush()


def _associated(domain: str, key_id: str) -> bytes:
    """Bound into each segment's tag: a segment moved to another domain's object does not decrypt."""
    return f"{FORMAT}|{domain}|{key_id}".encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def segments(data: bytes) -> list[dict]:
    """The segments of an encrypted object, still encrypted."""
    return [json.loads(line) for line in data.splitlines() if line.strip()]


def read_manifest(raw: bytes) -> dict:
    manifest = json.loads(raw)
    if manifest.get("format") not in (FORMAT, LEGACY_FORMAT):
        raise ValueError(f"not a {FORMAT} manifest")
    return manifest


def verify(data: bytes, manifest: dict, keys: dict[str, bytes | None] | None = None) -> str | None:
    """None when the object matches its manifest; otherwise what is wrong (no row content). With
    the data keys, each segment is also decrypted and its rows counted: the archive can be read."""
    digest = hashlib.sha256(data).hexdigest()
    if digest != manifest["sha256"]:
        return f"sha256 {digest[:12]}… differs from the manifest's {manifest['sha256'][:12]}…"
    if manifest["format"] == LEGACY_FORMAT:
        lines = gzip.decompress(data).count(b"\n")
        return None if lines == manifest["rows"] else f"{lines} rows in the object, {manifest['rows']} in the manifest"
    found = segments(data)
    if [{"key": s["key"], "rows": s["rows"]} for s in found] != manifest["segments"]:
        return "its segments differ from the manifest's"
    for segment in found:
        key = (keys or {}).get(segment["key"])
        if keys is not None and key is not None:
            try:
                lines = _decrypt(segment, key, manifest["domain"]).count(b"\n")
            except (InvalidTag, ValueError, zlib.error):
                return f"segment of key {segment['key']} does not decrypt: changed, or written with another key"
            if lines != segment["rows"]:
                return f"segment of key {segment['key']}: {lines} rows decrypted, {segment['rows']} written"
    rows = sum(segment["rows"] for segment in found)
    return None if rows == manifest["rows"] else f"{rows} rows in the object, {manifest['rows']} in the manifest"


def read_rows(data: bytes, manifest: dict, keys: dict[str, bytes | None]) -> Iterator[tuple[str, dict | None]]:
    """(record id, row) for every row of an object, in manifest order; the row is None where its
    data key is destroyed (an erased subject) or unknown: that row can no longer be read."""
    record_ids = iter(manifest["record_ids"])
    if manifest["format"] == LEGACY_FORMAT:
        for line in gzip.decompress(data).decode().splitlines():
            yield next(record_ids), json.loads(line)
        return
    for segment in segments(data):
        key = keys.get(segment["key"])
        if key is None:
            for _ in range(segment["rows"]):
                yield next(record_ids), None
            continue
        for line in _decrypt(segment, key, manifest["domain"]).decode().splitlines():
            yield next(record_ids), json.loads(line)


def _decrypt(segment: dict, key: bytes, domain: str) -> bytes:
    return zlib.decompress(open_sealed(key, base64.b64decode(segment["nonce"]), base64.b64decode(segment["data"]),
                                       _associated(domain, segment["key"])))


# An archived object (a PDF) of version 2, encrypted whole: the id of its data key, the nonce, then
# the ciphertext. Objects are written in chunks since (engine/archive/chunked.py, which reads both).
BLOB_MAGIC = b"RPA2"


def blob_key_id(sealed: bytes) -> str:
    if not sealed.startswith(BLOB_MAGIC):
        raise ValueError("not an encrypted archive object")
    return sealed[4:36].decode()


def decrypt_blob(sealed: bytes, key: bytes, domain: str) -> bytes:
    key_id = blob_key_id(sealed)
    return open_sealed(key, sealed[36:48], sealed[48:], _associated(domain, key_id))
