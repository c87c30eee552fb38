"""The deployment files: render.yaml wires what exists and every variable it sets is documented;
the Helm values keep deploy/dagster.yaml's limits; every command of the checklist in docs/deploy.md
is a command of this project."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

from retention_pipelines.cli.main import build_parser

REPOSITORY = Path(__file__).resolve().parents[1]
PLATFORM_VARIABLES = {"PYTHON_VERSION"}  # Render's own


def load(name: str) -> dict:
    return yaml.safe_load((REPOSITORY / name).read_text())


def configuration_table() -> set[str]:
    section = (REPOSITORY / "README.md").read_text().split("## Configuration (environment variables)", 1)[1]
    return set(re.findall(r"^\| `([A-Z0-9_]+)` \|", section.split("\n## ", 1)[0], flags=re.M))


def test_render_blueprint_wires_only_what_it_defines_and_documents_every_variable():
    blueprint = load("render.yaml")
    groups = {group["name"]: group["envVars"] for group in blueprint["envVarGroups"]}
    services = {service["name"]: service for service in blueprint["services"]}
    databases = {database["name"] for database in blueprint["databases"]}
    assert {"retention-code", "dagster-webserver", "dagster-daemon", "retention-locks"} <= set(services)
    assert services["retention-locks"]["maxmemoryPolicy"] == "noeviction"  # a lock is never evicted
    variables = []
    for service in services.values():
        for entry in service.get("envVars", []):
            if "fromGroup" in entry:
                assert entry["fromGroup"] in groups, entry
            else:
                variables.append(entry)
    variables += [entry for entries in groups.values() for entry in entries]
    deploy_doc = (REPOSITORY / "docs" / "deploy.md").read_text()
    documented = configuration_table()
    for entry in variables:
        key = entry["key"]
        assert key in documented or key in PLATFORM_VARIABLES or f"`{key}`" in deploy_doc, f"{key} is not documented"
        if "fromDatabase" in entry:
            assert entry["fromDatabase"]["name"] in databases, entry
        if "fromService" in entry:
            assert entry["fromService"]["name"] in services, entry
        assert "value" not in entry or not re.search(r"(KEY|TOKEN|PASSWORD|SECRET)", key), f"{key}: a secret in the file"
    # Every variable the production instance and workspace read is set for the services that need it.
    set_keys = {entry["key"] for entry in variables}
    assert {"DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_DB", "DAGSTER_PG_USERNAME", "DAGSTER_PG_PASSWORD",
            "DAGSTER_CODE_HOST", "DAGSTER_CODE_PORT", "DAGSTER_HOME", "RETENTION_DATABASE_URL",
            "RETENTION_ARCHIVE_MASTER_KEY", "RETENTION_REDIS_URL"} <= set_keys
    # The files the start commands name exist, and the code location is the package's.
    for service in services.values():
        command = shlex.split(service.get("startCommand", ""))
        if "-w" in command:
            assert (REPOSITORY / command[command.index("-w") + 1]).is_file(), service["name"]
        if "-m" in command:
            assert command[command.index("-m") + 1] == "retention_pipelines.definitions"


def test_helm_values_keep_the_production_limits():
    values, instance = load("deploy/helm-values.yaml"), load("deploy/dagster.yaml")
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    queued = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    runs = instance["concurrency"]["runs"]
    assert queued["maxConcurrentRuns"] == runs["max_concurrent_runs"]
    assert queued["tagConcurrencyLimits"] == runs["tag_concurrency_limits"]
    retries = values["dagsterDaemon"]["runRetries"]
    assert (retries["maxRetries"], retries["retryOnAssetOrOpFailure"]) == (
        instance["run_retries"]["max_retries"], instance["run_retries"]["retry_on_asset_or_op_failure"])
    assert values["retention"]["sensor"]["purgeAfterDays"] == instance["retention"]["sensor"]["purge_after_days"]
    [code] = values["dagster-user-deployments"]["deployments"]
    assert code["dagsterApiGrpcArgs"] == ["-m", "retention_pipelines.definitions"]


def test_every_checklist_command_is_a_command_of_this_project():
    checklist = (REPOSITORY / "docs" / "deploy.md").read_text().split("## Checklist before production", 1)[1]
    commands = re.findall(r"`(retention [^`]+)`", checklist)
    assert len(commands) >= 10
    parser = build_parser()
    for command in commands:
        words = [w for w in shlex.split(command.replace("…", "x@example.invalid")) if w != "YYYY-MM"][1:]
        words = [{"D": "quiz_responses", "RUN_ID": "r", "NAME": "ops", "ID": "1"}.get(w, w) for w in words]
        if "--month" in words:
            words.append("2026-11")
        parser.parse_args(words)  # exits (fails the test) on a command or option that does not exist
