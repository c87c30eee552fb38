"""A production code location with one variable missing refuses to load, and says which: the code
server runs as the code-location service does (`dagster code-server start`), the webserver reaches
it through deploy/workspace.yaml, and the location's load error is what the UI shows. Likewise
`retention health` fails naming it. Nothing falls back to the demo: no key is made."""

from __future__ import annotations

import os
import subprocess

import pytest

from retention_pipelines.stores.settings import REQUIRED_OUTSIDE_DEMO
from retention_pipelines_tests.support.dagster_deployment import CodeServer, Webserver, script
from retention_pipelines_tests.support.repository import REPOSITORY
from retention_pipelines_tests.support.servers import free_port

# Values that a load never connects to: the refusal comes before any store is opened.
PRODUCTION = {
    "RETENTION_DATABASE_URL": "postgresql://retention@db.invalid/app",
    "RETENTION_ARCHIVE_URL": "s3://archive-bucket/retention",
    "RETENTION_BLOB_URL": "s3://plans-bucket/pdfs",
    "RETENTION_REDIS_URL": "redis://locks.invalid:6379/0",
    "RETENTION_ARCHIVE_MASTER_KEY": "22" * 32,
    "RETENTION_ERASURE_HASH_KEY": "hash-key-of-the-refusal-test",
}
MISSING = "RETENTION_ARCHIVE_MASTER_KEY"  # the one whose fallback once made a key on a wiped disk


def production_env(tmp_path, missing: str) -> dict[str, str]:
    """The service's environment as a deployment would give it, RETENTION_ENV unset, one variable left out."""
    assert set(PRODUCTION) == set(REQUIRED_OUTSIDE_DEMO)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETENTION_") and k != "DAGSTER_HOME"}
    env.update({name: value for name, value in PRODUCTION.items() if name != missing})
    env["RETENTION_HOME"] = str(tmp_path / "retention_home")
    (tmp_path / "dagster_home").mkdir()
    env["DAGSTER_HOME"] = str(tmp_path / "dagster_home")
    return env


def test_the_code_location_fails_to_load_in_the_ui_naming_the_missing_variable(tmp_path):
    env = production_env(tmp_path, MISSING)
    port = free_port()
    code_server = CodeServer(env, tmp_path / "code_server.log", port).start()
    try:
        code_server.wait_ready()
    except AssertionError:
        code_server.stop()
        raise
    web_env = {**env, "DAGSTER_CODE_HOST": "127.0.0.1", "DAGSTER_CODE_PORT": str(port)}
    webserver = Webserver(web_env, tmp_path / "webserver.log", free_port(),
                          workspace=REPOSITORY / "deploy" / "workspace.yaml").start()
    try:
        [entry] = webserver.loaded_locations()
        error = entry["locationOrLoadError"]
        assert error["__typename"] == "PythonError", (entry, code_server.tail())
        shown = "\n".join([error["message"], *(cause["message"] for cause in error["causes"])])
        assert f"not set: {MISSING}" in shown, shown
        assert "RETENTION_ENV=demo" in shown
        assert code_server.alive(), code_server.tail()  # the service stays up, showing why it cannot load
    finally:
        webserver.stop()
        code_server.stop()
    assert not (tmp_path / "retention_home").exists()  # no demo database, no key generated


# Each variable's refusal is tested in-process (test_stores/test_settings.py); here the command's own path.
@pytest.mark.parametrize("missing", ["RETENTION_DATABASE_URL", "RETENTION_REDIS_URL"])
def test_retention_health_fails_naming_the_missing_variable(tmp_path, missing):
    env = production_env(tmp_path, missing)
    result = subprocess.run([script("retention"), "health"], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert f"not set: {missing}" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "retention_home").exists()
