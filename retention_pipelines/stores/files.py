"""Files written whole: a reader (or a kill) never sees half of one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

DRAFT_PREFIX = ".partial-"  # drafts beside their file; listings pass over them


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
