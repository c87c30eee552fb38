"""Local files of the stores: written whole (a reader, or a kill, never sees half of one), and
never outside the store's folder."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from retention_pipelines.errors import KeyOutsideStore

DRAFT_PREFIX = ".partial-"  # drafts beside their file; listings pass over them
READ_CHUNK_BYTES = 1024 * 1024  # what a streamed read takes from the file at a time


def inside(root: Path, key: str) -> Path:
    """The file `key` names in the store at `root`, or KeyOutsideStore: every operation of a
    local store goes through here before it touches a file.

    A key is a relative path of plain names, as an S3 key is a name: absolute, empty, `.`, `..`
    or empty segments and NUL bytes are refused as written, so that one key names one file and a
    key cannot climb out. Then symbolic links are resolved: a folder on the way, or the file
    itself, that leads out of the resolved root is refused. The path returned is the real folder
    and the key's last name, so that a delete removes the entry the key names, not what a link
    inside the store points at."""
    parts = key.split("/") if isinstance(key, str) else [""]
    if any(part in ("", ".", "..") or "\x00" in part for part in parts):
        raise KeyOutsideStore(f"key {key!r} is refused by the store at {root}: a key is a relative path of plain "
                              "names (no leading /, no '.', '..' or empty segment, no NUL byte)")
    try:
        base = root.resolve()
        path = base.joinpath(*parts)
        folder = path.parent.resolve()
        contained = folder.is_relative_to(base) and path.resolve().is_relative_to(base)
    except (OSError, RuntimeError):  # a symbolic-link loop: where it leads is unknowable, so it is refused
        contained = False
    if not contained:
        raise KeyOutsideStore(f"key {key!r} leads out of the store at {root} through a symbolic link")
    return folder / path.name


def write_whole(path: Path, data: bytes, keep_existing: bool = False) -> bool:
    """Write `data` to a private (0600) draft beside `path`, fsync it, then put it in place: over
    what is there, or, with keep_existing, only if nothing is (a link, which one process alone can
    make: the losers keep the winner's content). Returns whether this call's data is in place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=DRAFT_PREFIX)
    draft = Path(name)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if not keep_existing:
            os.replace(draft, path)
            return True
        try:
            os.link(draft, path)
        except FileExistsError:
            return False
        return True
    finally:
        draft.unlink(missing_ok=True)


def write_streamed(path: Path, chunks: Iterable[bytes]) -> str:
    """write_whole of chunks as they come, one in memory at a time: the draft is put in place only
    once every chunk is written and fsync'd, so an error in `chunks` (or a kill) leaves what was
    there. Returns the SHA-256 (hex) of what was written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=DRAFT_PREFIX)
    draft, digest = Path(name), hashlib.sha256()
    try:
        with os.fdopen(descriptor, "wb") as handle:
            for chunk in chunks:
                digest.update(chunk)
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(draft, path)
        return digest.hexdigest()
    finally:
        draft.unlink(missing_ok=True)


def read_chunks(path: Path, chunk_bytes: int = READ_CHUNK_BYTES) -> Iterator[bytes]:
    """A file's bytes, a chunk at a time, from one open handle: a file replaced meanwhile is read
    as it was when opened."""
    with path.open("rb") as handle:
        while chunk := handle.read(chunk_bytes):
            yield chunk
