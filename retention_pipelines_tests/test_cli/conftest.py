"""Helpers for the CLI tests: run `retention` in-process (capsys) or as the real console script."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from retention_pipelines.cli import main
from retention_pipelines.stores import AppDatabase

REPOSITORY = Path(__file__).resolve().parents[2]
RETENTION_SCRIPT = REPOSITORY / ".venv" / "bin" / "retention"
DAGSTER_YAML = REPOSITORY / "dagster.yaml"

# The test PostgreSQL trusts every loopback connection, so any password is accepted: a URL with
# one proves that the CLI never prints it.
PASSWORD = "pw-9Xq7-never-printed"

EMAIL = re.compile(r"[^\s@:/]+@[^\s@]+\.[a-z]{2,}")

ENVIRONMENT = ["RETENTION_DATABASE_URL", "RETENTION_ARCHIVE_URL", "RETENTION_REDIS_URL", "RETENTION_HOME",
               "RETENTION_POLICIES_FILE", "RETENTION_LOCK_WAIT_SECONDS", "RETENTION_LOCK_TTL_SECONDS",
               "DAGSTER_HOME"]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """No RETENTION_* or DAGSTER_HOME from the caller's shell; whatever a test or the CLI itself
    sets is undone afterwards (set first, so that monkeypatch restores even a variable that was unset)."""
    for name in ENVIRONMENT:
        monkeypatch.setenv(name, "unset-by-test")
        monkeypatch.delenv(name)


@dataclass
class Outcome:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


@pytest.fixture
def cli(capsys):
    """cli('hold', 'list') → Outcome; argparse's SystemExit becomes its exit code."""

    def invoke(*args: str) -> Outcome:
        capsys.readouterr()
        try:
            code = main(list(args))
        except SystemExit as exc:
            code = exc.code
        captured = capsys.readouterr()
        outcome = Outcome(code, captured.out, captured.err)
        assert PASSWORD not in outcome.text, outcome.text
        assert "Traceback" not in outcome.err, outcome.err
        return outcome

    return invoke


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


@pytest.fixture
def cli_env(pg_url, tmp_path, monkeypatch):
    """The CLI's environment: a DAGSTER_HOME, the test database (with a password), a local archive;
    the database for the test to read."""
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home(tmp_path / "dagster_home")))
    monkeypatch.setenv("RETENTION_DATABASE_URL", with_password(pg_url))
    (tmp_path / "archive").mkdir()
    monkeypatch.setenv("RETENTION_ARCHIVE_URL", (tmp_path / "archive").as_uri())
    monkeypatch.setenv("RETENTION_HOME", str(tmp_path / "retention_home"))
    database = AppDatabase(pg_url)
    yield database
    database.dispose()
