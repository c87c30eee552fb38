"""The deployment files, checked against what reads them: render.yaml against Render's Blueprint
rules and this project's least privilege; deploy/helm-values.yaml rendered as the Dagster chart
renders its instance settings and compared with deploy/dagster.yaml; deploy/dagster.yaml and
deploy/workspace.yaml through Dagster's own config validation, with the environment render.yaml
gives the webserver and the daemon; every command of the checklist in docs/deploy.md a command of
this project. Each failure names what broke."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest
import yaml

from retention_pipelines.cli.main import build_parser
from retention_pipelines.policies.model import Pacing
from retention_pipelines.stores.s3 import s3_client
from retention_pipelines.stores.settings import REQUIRED_OUTSIDE_DEMO
from retention_pipelines_tests.support.deploy_files import service_command as command

REPOSITORY = Path(__file__).resolve().parents[1]
CODE, WEBSERVER, DAEMON = "retention-code", "dagster-webserver", "dagster-daemon"
# Where the image (the repository's Dockerfile) keeps the repository's deploy/ and the instance.
IMAGE_APP = "/opt/dagster/app"
IMAGE_DAGSTER_HOME = "/opt/dagster/dagster_home"

# Render's Blueprint spec: the keys each kind of entry may have.
SERVICE_KEYS = {
    "type", "name", "region", "plan", "runtime", "repo", "branch", "image", "rootDir", "dockerCommand",
    "dockerContext", "dockerfilePath", "numInstances", "healthCheckPath", "scaling", "buildCommand",
    "startCommand", "preDeployCommand", "registryCredential", "domain", "domains", "envVars", "autoDeploy",
    "autoDeployTrigger", "initialDeployHook", "disk", "buildFilter", "previews", "maintenanceMode",
    "maxShutdownDelaySeconds", "ipAllowList", "renderSubdomainPolicy"}
KEYVALUE_KEYS = {"type", "name", "region", "ipAllowList", "plan", "previewPlan", "maxmemoryPolicy",
                 "persistenceMode"}
DATABASE_KEYS = {"name", "databaseName", "user", "region", "plan", "diskSizeGB", "storageAutoscalingEnabled",
                 "connectionPool", "previewPlan", "previewDiskSizeGB", "postgresMajorVersion", "highAvailability",
                 "ipAllowList", "readReplicas"}
GROUP_KEYS = {"name", "envVars"}
DATABASE_PROPERTIES = {"connectionString", "connectionPoolString", "host", "port", "user", "password", "database"}
SERVICE_PROPERTIES = {"host", "port", "hostport", "connectionString"}
# The variables that give access to the app's data: on the code-location service only.
APP_SECRETS = {"RETENTION_DATABASE_URL", "RETENTION_ARCHIVE_URL", "RETENTION_BLOB_URL", "RETENTION_REDIS_URL",
               "RETENTION_ARCHIVE_MASTER_KEY", "RETENTION_ERASURE_HASH_KEY", "RETENTION_SLACK_TOKEN",
               "RETENTION_PAGERDUTY_ROUTING_KEY", "RETENTION_PUSHGATEWAY_URL"}
AWS_KEYS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


def load(name: str) -> dict:
    return yaml.safe_load((REPOSITORY / name).read_text())


def blueprint() -> dict:
    return load("render.yaml")


def services() -> dict[str, dict]:
    return {service["name"]: service for service in blueprint()["services"]}


def groups() -> dict[str, list[dict]]:
    return {group["name"]: group["envVars"] for group in blueprint().get("envVarGroups", [])}


def variables(service: dict) -> list[dict]:
    """The service's variables: its own entries and those of the groups it takes."""
    found = []
    for entry in service.get("envVars", []):
        found += groups()[entry["fromGroup"]] if "fromGroup" in entry else [entry]
    return found


def variable_names(service: dict) -> set[str]:
    return {entry["key"] for entry in variables(service)}


def option(words: list[str], flag: str) -> str | None:
    return words[words.index(flag) + 1] if flag in words else None


def configuration_table() -> set[str]:
    section = (REPOSITORY / "README.md").read_text().split("## Configuration (environment variables)", 1)[1]
    return set(re.findall(r"^\| `([A-Z0-9_]+)` \|", section.split("\n## ", 1)[0], flags=re.M))


# --- render.yaml: Render's Blueprint rules ---------------------------------------------------------

def test_environment_groups_hold_plain_values_only():
    for name, entries in groups().items():
        for entry in entries:
            assert set(entry) in ({"key", "value"}, {"key", "generateValue"}), (
                f"group {name}, {entry.get('key')}: a group entry may only be key + value or generateValue "
                f"(references and sync: false belong in a service's envVars), found {sorted(entry)}")


def test_every_key_is_one_of_the_blueprint_spec():
    document = blueprint()
    assert set(document) <= {"services", "databases", "envVarGroups", "previews", "projects", "version"}, (
        f"render.yaml: unknown top-level keys {set(document) - {'services', 'databases', 'envVarGroups'}}")
    for service in document["services"]:
        allowed = KEYVALUE_KEYS if service["type"] in ("keyvalue", "redis") else SERVICE_KEYS
        assert set(service) <= allowed, f"service {service['name']}: keys not in Render's spec {set(service) - allowed}"
    for database in document["databases"]:
        assert set(database) <= DATABASE_KEYS, (
            f"database {database['name']}: keys not in Render's spec {set(database) - DATABASE_KEYS}")
    for group in document["envVarGroups"]:
        assert set(group) <= GROUP_KEYS, f"group {group['name']}: keys not in Render's spec {set(group) - GROUP_KEYS}"


def test_every_reference_resolves_to_what_the_blueprint_defines():
    databases = {database["name"] for database in blueprint()["databases"]}
    by_name = services()
    for service in by_name.values():
        for entry in service.get("envVars", []):
            where = f"service {service['name']}, {entry.get('key', entry.get('fromGroup'))}"
            sources = {"value", "generateValue", "fromDatabase", "fromService", "fromGroup"} & set(entry)
            assert len(sources) == 1 or (not sources and entry.get("sync") is False), (
                f"{where}: one source each (or sync: false), found {sorted(entry)}")
            assert set(entry) <= {"key", "value", "generateValue", "sync", "previewValue", "fromDatabase",
                                  "fromService", "fromGroup"}, f"{where}: unknown keys {sorted(entry)}"
            if "fromGroup" in entry:
                assert set(entry) == {"fromGroup"} and entry["fromGroup"] in groups(), f"{where}: no such group"
            if "fromDatabase" in entry:
                reference = entry["fromDatabase"]
                assert reference["name"] in databases, f"{where}: no database {reference['name']!r}"
                assert reference["property"] in DATABASE_PROPERTIES, f"{where}: no property {reference['property']!r}"
            if "fromService" in entry:
                reference = entry["fromService"]
                target = by_name.get(reference["name"])
                assert target is not None, f"{where}: no service {reference['name']!r}"
                assert reference["type"] == target["type"], (
                    f"{where}: {reference['name']} is a {target['type']}, not a {reference['type']}")
                if "envVarKey" in reference:
                    assert reference["envVarKey"] in variable_names(target), (
                        f"{where}: {reference['name']} has no variable {reference['envVarKey']}")
                else:
                    assert reference["property"] in SERVICE_PROPERTIES, (
                        f"{where}: no property {reference['property']!r}")


def test_every_secret_is_prompted_on_a_service_and_none_is_written_here():
    for service in services().values():
        for entry in service.get("envVars", []):
            if "fromGroup" in entry:
                continue
            key, where = entry["key"], f"service {service['name']}, {entry['key']}"
            sourced = {"value", "generateValue", "fromDatabase", "fromService"} & set(entry)
            assert sourced or entry.get("sync") is False, f"{where}: no value and not sync: false (never asked for)"
            if "value" in entry:
                assert not re.search(r"(KEY|TOKEN|PASSWORD|SECRET|_URL)$", key), (
                    f"{where}: a secret written in the file")
    for name, entries in groups().items():
        for entry in entries:
            assert not re.search(r"(KEY|TOKEN|PASSWORD|SECRET|_URL)$", entry["key"]), (
                f"group {name}, {entry['key']}: a secret written in the file")


def test_the_code_service_has_every_variable_production_requires():
    code = services()[CODE]
    own = {entry["key"]: entry for entry in code["envVars"] if "key" in entry}
    for key in REQUIRED_OUTSIDE_DEMO:
        assert key in own, f"{CODE}: {key} is required outside the demo and is not set"
        assert own[key].get("sync") is False or "fromService" in own[key], (
            f"{CODE}: {key} must be asked for (sync: false) or a reference, found {own[key]}")
    assert {"DAGSTER_PG_HOST", "DAGSTER_PG_PASSWORD", "DAGSTER_COMPUTE_LOG_BUCKET", "DAGSTER_HOME"} <= set(own) | \
        variable_names(code), f"{CODE}: runs open the instance here and need its variables"


def test_webserver_and_daemon_hold_no_app_secret():
    code_keys = {entry["key"]: entry for entry in services()[CODE]["envVars"] if "key" in entry}
    for name in (WEBSERVER, DAEMON):
        service = services()[name]
        present = variable_names(service)
        assert not present & APP_SECRETS, f"{name}: app secrets {present & APP_SECRETS} belong on {CODE} only"
        assert not {key for key in present if key.startswith("RETENTION_")}, f"{name}: RETENTION_* variables"
        for entry in service["envVars"]:
            if entry.get("key") in AWS_KEYS:
                assert set(entry) == {"key", "sync"} and entry["sync"] is False, (
                    f"{name}: {entry['key']} must be a key of its own (sync: false) for the compute-log bucket, "
                    f"not the app buckets' key of {CODE}")
        assert {"DAGSTER_PG_HOST", "DAGSTER_PG_PASSWORD", "DAGSTER_CODE_HOST", "DAGSTER_CODE_PORT",
                "DAGSTER_COMPUTE_LOG_BUCKET", "AWS_ACCESS_KEY_ID"} <= present, f"{name}: instance variables missing"
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(code_keys), f"{CODE}: the app buckets' key is missing"


def test_databases_and_key_values_are_closed_to_the_internet():
    for database in blueprint()["databases"]:
        assert database.get("ipAllowList") == [], f"database {database['name']}: ipAllowList: [] missing (open to all)"
    for service in services().values():
        if service["type"] == "keyvalue":
            assert service.get("ipAllowList") == [], f"keyvalue {service['name']}: ipAllowList: [] missing"
            assert service.get("maxmemoryPolicy") == "noeviction", f"{service['name']}: a lock must never be evicted"


def longest_batch_seconds() -> float:
    """The longest a batch takes and still succeeds: its transaction at the highest pacing target,
    then one archive write and its read back, each one S3 call within the client's timeouts."""
    transaction = max(m.le for m in Pacing.model_fields["batch_target_ms"].metadata if hasattr(m, "le")) / 1000
    config = s3_client().meta.config
    return transaction + 2 * (config.connect_timeout + config.read_timeout)


def test_a_deploy_gives_runs_time_to_finish_their_batch():
    code = services()[CODE]
    delay = code.get("maxShutdownDelaySeconds")
    assert delay is not None, f"{CODE}: no maxShutdownDelaySeconds, Render kills in-flight runs after 30 s"
    assert 1 <= delay <= 300, f"{CODE}: maxShutdownDelaySeconds {delay} outside Render's 1..300"
    assert delay >= longest_batch_seconds(), (
        f"{CODE}: maxShutdownDelaySeconds {delay} is shorter than the longest batch, {longest_batch_seconds():g} s")


def test_migrations_run_before_new_code_starts():
    by_name = services()
    assert by_name[CODE].get("preDeployCommand") == "retention db upgrade", (
        f"{CODE}: preDeployCommand must be `retention db upgrade` (the app database's retention tables)")
    instance_migrations = [name for name in (WEBSERVER, DAEMON)
                           if by_name[name].get("preDeployCommand") == "dagster instance migrate"]
    assert instance_migrations, "neither the webserver nor the daemon runs `dagster instance migrate` before deploy"


def test_services_run_the_image_with_their_commands():
    by_name, group_values = services(), {e["key"]: e.get("value") for entries in groups().values() for e in entries}
    for name in (CODE, WEBSERVER, DAEMON):
        service = by_name[name]
        assert service.get("runtime") == "docker" and service.get("dockerfilePath") == "./Dockerfile", (
            f"{name}: must be built from ./Dockerfile (runtime: docker)")
        assert "buildCommand" not in service and "startCommand" not in service, f"{name}: a native-runtime key"
        assert "PYTHON_VERSION" not in variable_names(service), f"{name}: PYTHON_VERSION means nothing to docker"
        words = command(service)
        assert words, f"{name}: no dockerCommand"
        workspace = option(words, "-w")
        if workspace:
            assert workspace.startswith(f"{IMAGE_APP}/"), f"{name}: -w {workspace} is not in the image's {IMAGE_APP}"
            assert (REPOSITORY / workspace.removeprefix(f"{IMAGE_APP}/")).is_file(), f"{name}: {workspace} missing"
        if "$" in service["dockerCommand"]:
            assert service["dockerCommand"].startswith("sh -c "), f"{name}: a variable that no shell expands"
    code = command(by_name[CODE])
    assert code[:3] == ["dagster", "code-server", "start"] and option(code, "-m") == "retention_pipelines.definitions"
    assert option(code, "-p") == group_values["DAGSTER_CODE_PORT"], (
        f"{CODE} listens on {option(code, '-p')}, the others look for it on {group_values['DAGSTER_CODE_PORT']}")
    web = command(by_name[WEBSERVER])
    assert web[0] == "dagster-webserver" and option(web, "-p") == "$PORT" and option(web, "-h") == "0.0.0.0"
    assert by_name[WEBSERVER]["dockerCommand"].startswith("sh -c "), f"{WEBSERVER}: $PORT needs a shell to expand"
    assert command(by_name[DAEMON])[:2] == ["dagster-daemon", "run"]
    assert group_values["DAGSTER_HOME"] == IMAGE_DAGSTER_HOME, "DAGSTER_HOME is not where the image keeps dagster.yaml"


def test_every_variable_is_documented():
    deploy_doc = (REPOSITORY / "docs" / "deploy.md").read_text()
    documented = configuration_table()
    keys = {entry["key"] for service in services().values() for entry in variables(service)}
    keys |= {entry["key"] for entries in groups().values() for entry in entries}
    for key in sorted(keys):
        assert key in documented or f"`{key}`" in deploy_doc, (
            f"{key} is in render.yaml but neither in the README's configuration table nor in docs/deploy.md")


# --- deploy/helm-values.yaml, rendered as the chart renders the instance ---------------------------

def chart_fail(message: str):
    raise AssertionError(f"helm-values: {message}")


def mapped(values: dict, mapping: dict[str, str], where: str) -> dict:
    """values' keys renamed as the chart's template renames them; a key the template does not
    render fails (it would be silently dropped)."""
    unknown = set(values) - set(mapping)
    if unknown:
        chart_fail(f"{where}: {sorted(unknown)} are not rendered by the chart")
    return {mapping[key]: value for key, value in values.items() if value is not None}


def render_instance(values: dict) -> dict:
    """The parts of dagster.yaml the chart writes from `values` (its configmap-instance.yaml and
    helpers/instance/*.tpl)."""
    daemon = values.get("dagsterDaemon", {})
    instance: dict = {"telemetry": {"enabled": values.get("telemetry", {}).get("enabled", True)}}
    if values.get("pythonLogs"):
        instance["python_logs"] = mapped(values["pythonLogs"], {
            "pythonLogLevel": "python_log_level", "managedPythonLoggers": "managed_python_loggers",
            "dagsterHandlerConfig": "dagster_handler_config"}, "pythonLogs")
    concurrency = values.get("concurrency", {})
    coordinator = daemon.get("runCoordinator", {})
    queued = (coordinator.get("config") or {}).get("queuedRunCoordinator") or {}
    runs = concurrency.get("runs", {})
    if coordinator.get("enabled") and coordinator.get("type") == "QueuedRunCoordinator":
        if runs.get("maxConcurrentRuns") is not None and queued.get("maxConcurrentRuns") is not None:
            chart_fail("maxConcurrentRuns in both concurrency.runs and the queued run coordinator: the chart fails")
        if runs.get("tagConcurrencyLimits") and queued.get("tagConcurrencyLimits"):
            chart_fail("tagConcurrencyLimits in both concurrency.runs and the queued run coordinator: the chart fails")
    if concurrency.get("enabled"):
        rendered = {}
        if concurrency.get("pools"):
            rendered["pools"] = mapped(concurrency["pools"], {
                "defaultLimit": "default_limit", "granularity": "granularity",
                "opGranularityRunBuffer": "op_granularity_run_buffer"}, "concurrency.pools")
        if runs:
            rendered["runs"] = mapped(runs, {"maxConcurrentRuns": "max_concurrent_runs",
                                             "tagConcurrencyLimits": "tag_concurrency_limits"}, "concurrency.runs")
            for limit in rendered["runs"].get("tag_concurrency_limits", []):
                if set(limit) - {"key", "value", "limit"}:
                    chart_fail(f"tagConcurrencyLimits: {limit} has keys the chart does not render")
        unknown = set(concurrency) - {"enabled", "pools", "runs"}
        if unknown:
            chart_fail(f"concurrency: {sorted(unknown)} are not rendered by the chart")
        instance["concurrency"] = rendered
    if daemon.get("enabled", True) and daemon.get("runMonitoring", {}).get("enabled"):
        instance["run_monitoring"] = mapped(daemon["runMonitoring"], {
            "enabled": "enabled", "startTimeoutSeconds": "start_timeout_seconds",
            "cancelTimeoutSeconds": "cancel_timeout_seconds", "maxResumeRunAttempts": "max_resume_run_attempts",
            "pollIntervalSeconds": "poll_interval_seconds",
            "freeSlotsAfterRunEndSeconds": "free_slots_after_run_end_seconds"}, "dagsterDaemon.runMonitoring")
    if daemon.get("enabled", True) and daemon.get("runRetries", {}).get("enabled"):
        instance["run_retries"] = mapped(daemon["runRetries"], {
            "enabled": "enabled", "maxRetries": "max_retries",
            "retryOnAssetOrOpFailure": "retry_on_asset_or_op_failure"}, "dagsterDaemon.runRetries")
    retention = values.get("retention", {})
    if retention.get("enabled"):
        instance["retention"] = {kind: {"purge_after_days": retention[kind]["purgeAfterDays"]}
                                 for kind in ("sensor", "schedule") if retention.get(kind)}
    manager = values.get("computeLogManager", {})
    if manager.get("type") == "S3ComputeLogManager":
        instance["compute_logs"] = {
            "module": "dagster_aws.s3.compute_log_manager", "class": "S3ComputeLogManager",
            "config": mapped(manager["config"]["s3ComputeLogManager"], {
                "bucket": "bucket", "localDir": "local_dir", "prefix": "prefix", "useSsl": "use_ssl",
                "verify": "verify", "verifyCertPath": "verify_cert_path", "endpointUrl": "endpoint_url",
                "skipEmptyFiles": "skip_empty_files"}, "computeLogManager.config.s3ComputeLogManager")}
    elif manager.get("type"):
        instance["compute_logs"] = {"type": manager["type"]}
    scheme = values.get("postgresql", {}).get("postgresqlScheme")
    instance["storage"] = {"postgres": {"postgres_db": {"scheme": scheme} if scheme else {}}}
    return instance


@pytest.mark.parametrize("section", ["telemetry", "python_logs", "concurrency", "run_monitoring", "run_retries",
                                     "retention", "compute_logs"])
def test_helm_values_render_the_production_instance(section):
    production = load("deploy/dagster.yaml")
    rendered = render_instance(load("deploy/helm-values.yaml"))
    assert section in production, f"deploy/dagster.yaml has no {section}"
    assert rendered.get(section) == production[section], (
        f"{section}: the chart renders {rendered.get(section)}, deploy/dagster.yaml says {production[section]}")


def test_helm_values_name_the_postgresql_driver():
    production = load("deploy/dagster.yaml")["storage"]["postgres"]["postgres_db"]["scheme"]
    rendered = render_instance(load("deploy/helm-values.yaml"))["storage"]["postgres"]["postgres_db"]
    assert rendered.get("scheme") == production, (
        f"postgresql.postgresqlScheme renders {rendered.get('scheme')}, deploy/dagster.yaml uses {production} "
        "(a bare postgresql:// is psycopg 3 under SQLAlchemy 2.1, not installed)")


def test_helm_values_run_the_image_with_the_secrets_it_needs():
    values = load("deploy/helm-values.yaml")
    [code] = values["dagster-user-deployments"]["deployments"]
    assert code["dagsterApiGrpcArgs"] == ["-m", "retention_pipelines.definitions"]
    assert code["image"]["repository"] and code["image"]["tag"], "the user deployment has no image"
    assert isinstance(code["port"], int)
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    settings = {"name": "retention-settings"}
    assert settings in code["envSecrets"], "the code location lacks retention-settings"
    assert settings in values["runLauncher"]["config"]["k8sRunLauncher"]["envSecrets"], (
        "run pods lack retention-settings")
    for part in ("dagsterWebserver", "dagsterDaemon"):
        assert values[part]["image"] == code["image"], f"{part}: not the project's image (needs dagster-aws, -k8s)"
        assert settings not in values[part].get("envSecrets", []), f"{part}: holds the app's secrets"
        assert {"name": "dagster-compute-logs"} in values[part]["envSecrets"], f"{part}: no compute-log credentials"
    assert values["postgresql"]["enabled"] is False and values["generatePostgresqlPasswordSecret"] is False
    assert values["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"


# --- deploy/dagster.yaml and deploy/workspace.yaml through Dagster's validation -------------------

def placeholder(entry: dict) -> str:
    """A value standing for what Render would give the entry."""
    if "value" in entry:
        return str(entry["value"])
    if entry.get("fromDatabase", {}).get("property") == "port" or entry["key"].endswith("_PORT"):
        return "5432"
    if entry["key"] == "AWS_DEFAULT_REGION":
        return "eu-central-1"
    return f"placeholder-{entry['key'].lower().replace('_', '-')}"


@pytest.fixture(params=[WEBSERVER, DAEMON])
def image_environment(request, monkeypatch):
    """The environment render.yaml gives the service, secrets as placeholders, and nothing else of
    Dagster's or AWS's."""
    import os

    for name in list(os.environ):
        if name.startswith(("DAGSTER_", "AWS_", "RETENTION_")):
            monkeypatch.delenv(name)
    environment = {entry["key"]: placeholder(entry) for entry in variables(services()[request.param])}
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return environment


def test_dagster_validates_the_production_instance(image_environment, tmp_path):
    from dagster._config import process_config
    from dagster._core.instance.config import dagster_instance_config
    from dagster._core.storage.config import pg_config

    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPOSITORY / "deploy" / "dagster.yaml", home / "dagster.yaml")
    config, custom_class = dagster_instance_config(str(home))
    assert custom_class is None
    storage = process_config(pg_config(), config["storage"]["postgres"])
    assert storage.success, f"storage: {[error.message for error in storage.errors]}"
    assert storage.value["postgres_db"]["hostname"] == image_environment["DAGSTER_PG_HOST"]


def test_the_compute_log_manager_imports_and_accepts_its_config(image_environment, tmp_path):
    from dagster._config import process_config
    from dagster._serdes import ConfigurableClassData
    from dagster._serdes.config_class import class_from_code_pointer

    manager = load("deploy/dagster.yaml")["compute_logs"]
    cls = class_from_code_pointer(manager["module"], manager["class"])
    assert f"{cls.__module__}.{cls.__name__}" == "dagster_aws.s3.compute_log_manager.S3ComputeLogManager"
    result = process_config(cls.config_type(), manager["config"])
    assert result.success, f"compute_logs: {[error.message for error in result.errors]}"
    assert result.value["bucket"] == image_environment["DAGSTER_COMPUTE_LOG_BUCKET"]
    built = cls.from_config_value(ConfigurableClassData(manager["module"], manager["class"],
                                                        yaml.safe_dump(manager["config"])), result.value)
    assert built._s3_bucket == image_environment["DAGSTER_COMPUTE_LOG_BUCKET"]  # noqa: SLF001


def test_dagster_validates_the_production_workspace(image_environment):
    from dagster._core.workspace.config_schema import ensure_workspace_config

    path = REPOSITORY / "deploy" / "workspace.yaml"
    workspace = ensure_workspace_config(yaml.safe_load(path.read_text()), str(path))
    [location] = workspace["load_from"]
    server = location["grpc_server"]
    assert (server["host"], str(server["port"])) == (image_environment["DAGSTER_CODE_HOST"],
                                                     image_environment["DAGSTER_CODE_PORT"])
    assert server["location_name"] == "retention_pipelines"


# --- docs/deploy.md ---------------------------------------------------------------------------------

def test_every_checklist_command_is_a_command_of_this_project():
    checklist = (REPOSITORY / "docs" / "deploy.md").read_text().split("## Checklist before production", 1)[1]
    commands = re.findall(r"`(retention [^`]+)`", checklist)
    assert len(commands) >= 10
    parser = build_parser()
    for command_text in commands:
        words = [w for w in shlex.split(command_text.replace("…", "x@example.invalid")) if w != "YYYY-MM"][1:]
        words = [{"D": "quiz_responses", "RUN_ID": "r", "NAME": "ops", "ID": "1"}.get(w, w) for w in words]
        if "--month" in words:
            words.append("2026-11")
        parser.parse_args(words)  # exits (fails the test) on a command or option that does not exist


def test_the_demo_instance_never_shows_the_first_visit_dialog(tmp_path):
    """The webserver asks the instance (GraphQL shouldShowNux); the production instance is asked the
    same way by the UI test, through its webserver."""
    import dagster as dg

    shutil.copy(REPOSITORY / "dagster.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.nux_enabled is False
    assert load("deploy/dagster.yaml")["nux"] == {"enabled": False}
