"""The `retention` command as the tests run it: the installed console script, the password it must
never print, what it prints read back (its outcome in process, its tables)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from retention_pipelines_tests.support.repository import REPOSITORY

RETENTION_SCRIPT = REPOSITORY / ".venv" / "bin" / "retention"
DAGSTER_YAML = REPOSITORY / "dagster.yaml"

# The test PostgreSQL trusts every loopback connection, so any password is accepted: a URL with
# one proves that the CLI never prints it.
PASSWORD = "pw-9Xq7-never-printed"

EMAIL = re.compile(r"[^\s@:/]+@[^\s@]+\.[a-z]{2,}")

# The columns `retention queue list` prints.
QUEUE_COLUMNS = ["id", "domain", "record_id", "reason", "status", "due_at", "overdue", "level", "attempts",
                 "claimed_by"]


@dataclass
class Outcome:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


def run_script(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """The installed console script, with the (monkeypatched) environment of the test."""
    result = subprocess.run([str(RETENTION_SCRIPT), *args], capture_output=True, text=True, env=dict(os.environ),
                            cwd=cwd, timeout=timeout)
    assert PASSWORD not in result.stdout + result.stderr
    return result


def with_password(url: str) -> str:
    return make_url(url).set(password=PASSWORD).render_as_string(hide_password=False)


def dagster_home(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(DAGSTER_YAML, folder / "dagster.yaml")
    return folder


def parse_table(text: str) -> list[dict]:
    """The summary table printed by `run` (pandas to_string; no value holds a space)."""
    lines = [line.split() for line in text.strip().splitlines() if line.strip()]
    header, *rows = lines
    assert all(len(row) == len(header) for row in rows), text
    return [dict(zip(header, row)) for row in rows]


def parse_items(text: str) -> list[dict]:
    """The table `queue list` prints: one line per item; due_at is 'YYYY-MM-DD HH:MM' (two words) and
    claimed_by may be empty (the line then ends early)."""
    lines = [line.split() for line in text.strip().splitlines() if line.strip()]
    header, *rows = lines
    assert header == QUEUE_COLUMNS, text
    items = []
    for tokens in rows:
        assert len(tokens) in (10, 11), text
        values = tokens[:5] + [" ".join(tokens[5:7])] + tokens[7:10] + [tokens[10] if len(tokens) == 11 else ""]
        items.append(dict(zip(QUEUE_COLUMNS, values)))
    return items
