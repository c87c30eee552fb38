"""Where the stores and keys come from: the demo falls back to RETENTION_HOME only when asked
(RETENTION_ENV=demo); anywhere else a missing store or key refuses when the settings are read,
naming every missing variable, and no key is ever made."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from retention_pipelines.stores.settings import REQUIRED_OUTSIDE_DEMO, ConfigurationError, load_settings

# A complete production environment: every store and key named (values never reach a server here).
PRODUCTION = {
    "RETENTION_DATABASE_URL": "postgresql+psycopg2://retention@db.invalid/app",
    "RETENTION_ARCHIVE_URL": "s3://archive-bucket/retention",
    "RETENTION_BLOB_URL": "s3://plans-bucket/pdfs",
    "RETENTION_REDIS_URL": "redis://locks.invalid:6379/0",
    "RETENTION_ARCHIVE_MASTER_KEY": "11" * 32,
    "RETENTION_ERASURE_HASH_KEY": "a-hash-key-from-the-secret-store",
}


@pytest.fixture
def production(monkeypatch, tmp_path):
    """RETENTION_ENV unset (production, the default), RETENTION_HOME empty, the given variables set."""
    monkeypatch.delenv("RETENTION_ENV", raising=False)
    monkeypatch.setenv("RETENTION_HOME", str(tmp_path / "home"))
    for name in PRODUCTION:
        monkeypatch.delenv(name, raising=False)

    def environment(**variables: str) -> None:
        for name, value in variables.items():
            monkeypatch.setenv(name, value)

    return environment


def test_the_shipped_list_is_exactly_the_stores_and_keys_a_run_needs():
    assert set(REQUIRED_OUTSIDE_DEMO) == set(PRODUCTION)


def test_a_complete_production_environment_loads_and_resolves_nothing_from_home(production, tmp_path):
    production(**PRODUCTION)
    settings = load_settings()
    assert not settings.is_demo
    assert settings.resolved_database_url() == PRODUCTION["RETENTION_DATABASE_URL"]
    assert settings.resolved_archive_url() == PRODUCTION["RETENTION_ARCHIVE_URL"]
    assert settings.resolved_blob_url() == PRODUCTION["RETENTION_BLOB_URL"]
    assert settings.resolved_archive_master_key() == bytes.fromhex("11" * 32)
    assert settings.resolved_erasure_hash_key() == PRODUCTION["RETENTION_ERASURE_HASH_KEY"].encode()
    assert settings.lock_dir() is None  # Redis holds the locks
    assert not (tmp_path / "home").exists()


@pytest.mark.parametrize("missing", REQUIRED_OUTSIDE_DEMO)
def test_production_with_one_variable_missing_refuses_naming_it_and_makes_no_key(production, tmp_path, missing):
    production(**{name: value for name, value in PRODUCTION.items() if name != missing})
    with pytest.raises(ConfigurationError) as refused:
        load_settings()
    message = str(refused.value)
    assert missing in message and "RETENTION_ENV=demo" in message
    assert not [name for name in REQUIRED_OUTSIDE_DEMO if name != missing and name in message]
    assert not (tmp_path / "home").exists()  # no key file, no demo database, no lock folder


def test_an_empty_or_blank_variable_counts_as_missing(production):
    production(**{**PRODUCTION, "RETENTION_ARCHIVE_MASTER_KEY": "", "RETENTION_BLOB_URL": "  "})
    with pytest.raises(ConfigurationError, match="RETENTION_BLOB_URL, RETENTION_ARCHIVE_MASTER_KEY"):
        load_settings()


@given(present=st.sets(st.sampled_from(REQUIRED_OUTSIDE_DEMO)))
def test_any_incomplete_production_environment_is_refused_naming_exactly_what_is_missing(present):
    """Whatever subset a deployment forgot, it is refused with that subset, and only a complete one loads."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("RETENTION_ENV", raising=False)
        for name in REQUIRED_OUTSIDE_DEMO:
            patch.delenv(name, raising=False)
        for name in present:
            patch.setenv(name, PRODUCTION[name])
        missing = [name for name in REQUIRED_OUTSIDE_DEMO if name not in present]
        if not missing:
            assert not load_settings().is_demo
            return
        with pytest.raises(ConfigurationError) as refused:
            load_settings()
        named = str(refused.value).split("not set: ", 1)[1].split(". ", 1)[0]
        assert named.split(", ") == missing


def test_the_demo_is_asked_for_and_then_falls_back_to_its_home(production, monkeypatch, tmp_path):
    monkeypatch.setenv("RETENTION_ENV", " Demo ")
    settings = load_settings()
    assert settings.is_demo
    assert settings.resolved_database_url().endswith("home/demo.db")
    assert len(settings.resolved_archive_master_key()) == 32
    assert settings.lock_dir() == (tmp_path / "home" / "locks").resolve()


def test_an_unknown_environment_is_refused_naming_the_variable(production, monkeypatch):
    production(**PRODUCTION)
    monkeypatch.setenv("RETENTION_ENV", "staging")
    with pytest.raises(ConfigurationError, match="RETENTION_ENV: must be demo or production"):
        load_settings()


@pytest.mark.parametrize("resolve", ["resolved_database_url", "resolved_archive_url", "resolved_blob_url",
                                     "resolved_archive_master_key", "resolved_erasure_hash_key", "lock_dir"])
def test_no_fallback_is_reachable_outside_the_demo_even_past_validation(production, tmp_path, resolve):
    """Settings built without validation (a resource's overrides, a future caller) still never
    fall back: each resolver refuses on its own."""
    production(**PRODUCTION)
    settings = load_settings().model_copy(update={"database_url": None, "archive_url": None, "blob_url": None,
                                                  "redis_url": None, "archive_master_key": None,
                                                  "erasure_hash_key": None})
    with pytest.raises(ConfigurationError, match="only the demo"):
        getattr(settings, resolve)()
    assert not (tmp_path / "home").exists()
