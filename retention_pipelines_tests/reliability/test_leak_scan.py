"""The leak scan. Unique, recognisable addresses (`leakcanary-<uuid4 hex>@example.invalid`)
are seeded in every domain's rows, and canary secrets (support/secret_canaries.py) are put in every
secret-bearing setting: the database's user and password (a role of that name), the Redis user and
password (an ACL user), the alert webhook's path token, the Pushgateway's password (unreachable:
every run logs its failure), the Slack token, the PagerDuty routing key, the archive master key,
the erasure hash key and the AWS secret. Then everything runs the way an operator runs it, through
the real `retention` command on a persistent Dagster instance (DAGSTER_HOME with SQLite storage):
every domain's job, a delete blocked by a foreign key (→ manual queue), a legal hold, a request for
erasure and its run (→ a legal_hold_conflict item), the queue listed and shown, the monthly report,
`retention health` (with Redis up, and with Redis unreachable) and `retention alerts test` to
every channel. Logs at DEBUG, so that every structured line is written.

Then every place the system writes is searched for the addresses and their lower-case local parts,
and for the secrets: the whole DAGSTER_HOME folder byte by byte (event log and run storage,
compute logs, schedules), the instance's runs, tags and every event record (materialization and
check metadata included), the structured logs and output of every command, the audit log, the
manual queue and every other retention table, the archive store, the report's files and the
alerts the channels received. Target: 0 occurrences.

The secrets are also scanned for one output at a time (every setting × every output, in process):
log lines, alert payloads, the errors each store raises, `retention health` and `retention alerts
test` against services that are unreachable or refuse the canary credentials, and Dagster's event
log of the health asset.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import uuid
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest

from retention_pipelines.dagster_wiring.health import build_health_defs
from retention_pipelines.dagster_wiring.resources import RetentionStores
from retention_pipelines.logs import ROOT, configure_logging, get_logger
from retention_pipelines.stores import (
    AppDatabase,
    StoreUnavailable,
    archive_store_from_url,
    blob_store_from_url,
    load_settings,
)
from retention_pipelines.stores.lock import RedisDomainLocks
from retention_pipelines.stores.metrics import push_run_metrics
from retention_pipelines.stores.notifier import (
    Alert,
    LogNotifier,
    PagerDutyNotifier,
    SlackNotifier,
    WebhookNotifier,
    notifier,
)
from retention_pipelines_tests.support.alert_channels import AlertReceiver
from retention_pipelines_tests.support.app_rows import _insert
from retention_pipelines_tests.support.cli import RETENTION_SCRIPT, dagster_home
from retention_pipelines_tests.support.databases import dump_all_tables, new_database
from retention_pipelines_tests.support.figures import record
from retention_pipelines_tests.support.queue_rows import create_notes_table, queue_rows, refer_to
from retention_pipelines_tests.support.secret_canaries import (
    canary_environment,
    create_database_role,
    create_redis_user,
    leaked,
    new_canaries,
)
from retention_pipelines_tests.support.servers import free_port

# `cli` (the root conftest's fixture) runs `retention` in process; clean_environment clears
# RETENTION_* and DAGSTER_HOME for every test of this module, as for the CLI tests.
pytestmark = pytest.mark.usefixtures("clean_environment")

PDF = b"%PDF-1.4 meal plan\n"


def canary() -> str:
    return f"leakcanary-{uuid.uuid4().hex}@example.invalid"


class Scene:
    """The database, the stores, the environment of every command and what each command printed."""

    def __init__(self, folder: Path, url: str, secrets: dict[str, str]):
        self.folder, self.url = folder, url
        self.database = AppDatabase(url)  # the test's own connection, as the server's superuser
        self.blobs_url = (folder / "blobs").as_uri()
        (folder / "archive").mkdir()
        self.dagster_home = dagster_home(folder / "dagster_home")
        # The caller's AWS credentials give way to the canary secret (the stores here are local).
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("RETENTION_", "DAGSTER_", "AWS_"))}
        self.env.update(secrets)
        self.env.update({
            "RETENTION_ARCHIVE_URL": (folder / "archive").as_uri(),
            "RETENTION_BLOB_URL": self.blobs_url, "RETENTION_HOME": str(folder / "home"),
            "RETENTION_LOG_LEVEL": "DEBUG", "DAGSTER_HOME": str(self.dagster_home)})
        self.outputs: list[str] = []

    def cli(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        result = subprocess.run([str(RETENTION_SCRIPT), *args], capture_output=True, text=True, env={**self.env, **env},
                                cwd=self.folder, timeout=300)
        # What the command printed, not its arguments (an address given on the command line is the input).
        self.outputs.append(f"$ retention {args[0] if args else ''} …\n{result.stdout}\n{result.stderr}")
        return result


def seed(scene: Scene, runs: str, erased: str) -> dict[str, str]:
    """`runs` in every domain with rows past their deadline (one quiz answer held by a foreign key),
    `erased` in every domain with young rows (one meal plan under a legal hold). Their ids."""
    database, blobs = scene.database, blob_store_from_url(scene.blobs_url)
    now, at = database.now(), database.bind_time
    young, old = now - timedelta(hours=1), now - timedelta(days=100)

    def quiz(email, when):
        return {"session_id": uuid.uuid4(), "email": email, "answers": {"note": "keto"}, "created_at": at(when)}

    def token(email, expires):
        return {"email": email, "token_hash": uuid.uuid4().hex, "created_at": at(expires - timedelta(minutes=15)),
                "expires_at": at(expires)}

    def plan(email, when, name):
        blobs.put(f"plans/{name}.pdf", PDF)
        return {"payment_id": f"pay_{uuid.uuid4().hex[:12]}", "email": email, "pdf_blob_key": f"plans/{name}.pdf",
                "created_at": at(when)}

    def listed(email, when):
        return {"email": email, "reason": "chargeback", "created_at": at(when)}

    quiz_ids = _insert(database, "quiz_responses", [quiz(runs, now - timedelta(hours=30)),
                                                    quiz(runs.upper(), now - timedelta(hours=30)),
                                                    quiz(erased, young)])
    _insert(database, "magic_link_tokens", [token(runs, now - timedelta(hours=2)),
                                            token(erased, now + timedelta(minutes=10))])
    plan_ids = _insert(database, "meal_plans", [plan(runs, old, "runs-old"), plan(erased, young, "erased-young"),
                                                plan(erased, old - timedelta(days=1), "erased-old")])
    _insert(database, "email_blacklist", [listed(runs, old), listed(erased, now - timedelta(days=2))])
    create_notes_table(database)
    refer_to(database, quiz_ids[0])  # its delete is refused: a delete_blocked item in the manual queue
    return {"blocked_quiz": quiz_ids[0], "held_plan": plan_ids[1]}


def haystacks(scene: Scene, report_folder: Path, receiver: AlertReceiver, monkeypatch) -> tuple[dict[str, str], int]:
    """Every place searched, as text (bytes decoded leniently), by name."""
    found: dict[str, str] = {}
    for root, name in ((scene.dagster_home, "dagster_home"), (scene.folder / "archive", "archive store"),
                       (report_folder, "report")):
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            found[f"{name}: {path.relative_to(root)}"] = path.read_bytes().decode("utf-8", "replace")
    monkeypatch.setenv("DAGSTER_HOME", str(scene.dagster_home))
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs()
        for run in runs:
            found[f"run {run.run_id} tags and config"] = json.dumps(
                {"tags": run.tags, "config": run.run_config}, default=str)
            found[f"run {run.run_id} event log"] = "\n".join(
                repr(entry) for entry in instance.all_logs(run.run_id))
    dump = dump_all_tables(scene.database)
    for table, rows in dump.items():
        if table.startswith(("retention_", "gdpr_")):  # the app's own tables hold addresses by design
            found[f"table {table}"] = repr(rows)
    found["commands' output and structured logs"] = "\n".join(scene.outputs)
    found["queue"] = repr(queue_rows(scene.database))
    # What the alert channels received; not the credential each service takes to accept a message
    # (Slack's token in the Authorization header, PagerDuty's routing key in the event).
    found["alerts received"] = json.dumps(
        [receiver.received, [body for body, _ in receiver.slack],
         [{k: v for k, v in event.items() if k != "routing_key"} for event in receiver.pagerduty]])
    return found, len(runs)


def address_needles(addresses: list[str]) -> list[str]:
    return [n for a in addresses for n in (a, a.split("@")[0])]


def occurrences(places: dict[str, str], needles: list[str]) -> dict[str, int]:
    """Per place, how often any needle occurs (case-insensitively)."""
    needles = sorted({n.lower() for n in needles}, key=len, reverse=True)
    pattern = re.compile("|".join(map(re.escape, needles)))
    counts = {place: len(pattern.findall(text.lower())) for place, text in places.items()}
    return {place: count for place, count in counts.items() if count}


def address_of(url: str) -> str:
    """host:port/name of a test database's URL."""
    return url.split("@", 1)[1]


def server_of(url: str) -> str:
    """host:port of the test Redis's URL."""
    return url.split("//", 1)[1].rsplit("/", 1)[0]


@pytest.fixture
def canaries(postgres_server, redis_url) -> dict[str, str]:
    """Canary secrets, with a database role and a Redis user of the canary names."""
    made = new_canaries()
    create_database_role(postgres_server, made["database_user"])
    create_redis_user(redis_url, made["redis_user"], made["redis_password"])
    return made


@pytest.fixture
def scene(postgres_server, redis_url, receiver, canaries, tmp_path):
    url = new_database(postgres_server)
    secrets = canary_environment(canaries, address_of(url), server_of(redis_url), receiver.base,
                                 f"127.0.0.1:{free_port()}")
    scene = Scene(tmp_path, url, secrets)
    yield scene
    scene.database.dispose()


def test_no_address_and_no_secret_anywhere_after_running_everything(scene, canaries, receiver, tmp_path,
                                                                   monkeypatch):
    runs, erased = canary(), canary()
    ids = seed(scene, runs, erased)
    hold = scene.cli("hold", "add", "--domain", "meal_plans", "--record-id", ids["held_plan"], "--reason", "case 12",
                     "--by", "legal")
    assert hold.returncode == 0, hold.stderr

    everything = scene.cli("run")  # every enabled domain; the foreign key blocks one quiz answer
    assert "quiz_responses" in everything.stdout, everything.stderr
    requested = scene.cli("erasure", "request", "--email", erased)
    assert requested.returncode == 0, requested.stderr
    request_id = re.search(r"erasure request (\d+)", requested.stdout)[1]
    erasure = scene.cli("erasure", "run", request_id)
    assert erasure.returncode == 0, erasure.stderr
    queue = scene.cli("queue", "list")
    reasons = {row["reason"] for row in queue_rows(scene.database)}
    assert {"delete_blocked", "legal_hold_conflict"} <= reasons, (reasons, queue.stdout)
    for item in queue_rows(scene.database):
        scene.cli("queue", "show", str(item["id"]))
    scene.cli("erasure", "status")
    scene.cli("audit", "index")
    scene.cli("audit", "show", "--record-id", ids["blocked_quiz"])
    month = f"{scene.database.now():%Y-%m}"
    report = scene.cli("report", "--month", month, "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr
    health = scene.cli("health")
    assert health.returncode == 0, health.stdout + health.stderr
    no_redis = scene.cli("health", RETENTION_REDIS_URL=f"redis://{canaries['redis_user']}:"
                         f"{canaries['redis_password']}@127.0.0.1:{free_port()}/0")
    assert no_redis.returncode == 1 and "lock_service" in no_redis.stdout, no_redis.stdout + no_redis.stderr
    alerts = scene.cli("alerts", "test")
    assert alerts.returncode == 0, alerts.stdout + alerts.stderr
    # The canaries were in force: each service got the credential it takes, and only it.
    assert receiver.pagerduty and {e["routing_key"] for e in receiver.pagerduty} == {canaries["pagerduty_routing_key"]}
    assert receiver.slack and {auth for _, auth in receiver.slack} == {f"Bearer {canaries['slack_token']}"}
    assert ("POST", f"/alerts/{canaries['webhook_token']}") in receiver.requests

    places, run_count = haystacks(scene, tmp_path / "report", receiver, monkeypatch)
    # The scan must be able to find the secrets: they are in the environment of every command.
    assert sum(occurrences({"environment": json.dumps(scene.env)}, list(canaries.values())).values()) >= len(canaries)
    # The scan must be able to find something: the addresses are in the app's rows it skips.
    assert occurrences({"app rows": repr(dump_all_tables(scene.database))}, address_needles([runs, erased]))
    leaks = occurrences(places, address_needles([runs, erased]))
    total = sum(leaks.values())
    record("leak scan: address occurrences", "0", f"{total} in {len(places)} places searched ({run_count} runs)",
           total == 0)
    secret_leaks = occurrences(places, list(canaries.values()))
    secrets_total = sum(secret_leaks.values())
    record("leak scan: secret occurrences", "0", f"{secrets_total} occurrences of {len(canaries)} canary secrets in "
           f"{len(places)} places searched", secrets_total == 0)
    assert run_count >= 5 and len(places) > 20
    # The places searched hold what they should: compute logs, the engine's lines in the event log
    # and JSON log lines from the commands, so that 0 means nothing leaked, not nothing written.
    assert any("/compute_logs/" in place for place in places)
    assert any("event log" in place and "retention_pipelines" in text for place, text in places.items())
    assert '"logger": "retention_pipelines' in places["commands' output and structured logs"]
    # Errors were written too: the Pushgateway's in each run's event log, Redis's in `health`.
    assert any("event log" in place and "pushgateway http://127.0.0.1" in text for place, text in places.items())
    assert "lock service" in places["commands' output and structured logs"]
    assert total == 0, leaks
    assert secrets_total == 0, secret_leaks


# Every secret setting × every output, one output at a time ---------------------------------------
# The variables that carry secrets and that clean_environment leaves as the caller's shell set them.
SECRET_VARIABLES = ("RETENTION_ALERT_WEBHOOK_URL", "RETENTION_SLACK_TOKEN", "RETENTION_SLACK_CHANNEL",
                   "RETENTION_SLACK_API_URL", "RETENTION_PAGERDUTY_ROUTING_KEY", "RETENTION_PAGERDUTY_EVENTS_URL",
                   "RETENTION_PUSHGATEWAY_URL", "RETENTION_ARCHIVE_MASTER_KEY", "RETENTION_ERASURE_HASH_KEY",
                   "AWS_SECRET_ACCESS_KEY")


@pytest.fixture
def in_force(monkeypatch, tmp_path):
    """in_force(canaries, database=host:port/name, redis=host:port, alerts=base URL): the canary
    environment set for the test (each part unreachable unless given), with local stores, logs at
    DEBUG, and no other configuration from the caller's shell."""
    for name in SECRET_VARIABLES:
        monkeypatch.delenv(name, raising=False)

    def configure(canaries: dict[str, str], database: str | None = None, redis: str | None = None,
                  alerts: str | None = None) -> dict[str, str]:
        env = canary_environment(canaries, database or f"127.0.0.1:{free_port()}/app",
                                 redis or f"127.0.0.1:{free_port()}", alerts or f"http://127.0.0.1:{free_port()}",
                                 f"127.0.0.1:{free_port()}")
        (tmp_path / "archive").mkdir(exist_ok=True)
        env.update({"RETENTION_ARCHIVE_URL": (tmp_path / "archive").as_uri(),
                    "RETENTION_BLOB_URL": (tmp_path / "blobs").as_uri(),
                    "RETENTION_HOME": str(tmp_path / "home"), "RETENTION_LOG_LEVEL": "DEBUG"})
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        return env

    return configure


def assert_no_secret(text: str, canaries: dict[str, str]) -> None:
    found = leaked(text, canaries)
    assert not found, f"{found} in: {text}"


@pytest.fixture
def json_log():
    """The package's JSON log lines at DEBUG, into a string; the logger put back afterwards."""
    root = logging.getLogger(ROOT)
    saved_handlers, saved_level = list(root.handlers), root.level
    root.handlers = []
    stream = io.StringIO()
    configure_logging(default_level="DEBUG", stream=stream)
    yield stream
    root.handlers, root.level = saved_handlers, saved_level


def as_a_driver_says(canaries: dict[str, str]) -> str:
    """One error text quoting every canary as drivers and servers do: user names in quotes
    (libpq's role "x"), passwords inside connection strings, tokens and keys bare."""
    c = canaries
    return "; ".join([
        f'FATAL:  role "{c["database_user"]}" does not exist', f'user "{c["redis_user"]}" is disabled',
        f"could not connect to postgresql://{c['database_user']}:{c['database_password']}@db:5432/app",
        f"redis://{c['redis_user']}:{c['redis_password']}@cache:6379/0 refused",
        f"POST https://hooks.example.com/alerts/{c['webhook_token']} failed",
        f"http://metrics:{c['pushgateway_password']}@gateway:9091 down",
        *(f"invalid {name} {c[name]}" for name in ("slack_token", "pagerduty_routing_key", "archive_master_key",
                                                 "erasure_hash_key", "aws_secret_access_key"))])


def test_the_driver_text_of_these_tests_quotes_every_canary():
    """The text the next tests log and alert with would leak every secret, were nothing masked."""
    canaries = new_canaries()
    assert set(leaked(as_a_driver_says(canaries), canaries)) == set(canaries)


def test_no_secret_in_log_lines(in_force, json_log):
    canaries = new_canaries()
    in_force(canaries)
    load_settings()  # the settings in force
    text = as_a_driver_says(canaries)
    log = get_logger("leak_scan")
    log.error(text)
    log.warning("batch failed: %s", text)
    try:
        raise RuntimeError(text)
    except RuntimeError:
        log.exception("step failed")
    LogNotifier(get_logger("alerts")).send(Alert("quiz_responses", "run_failures", "opened", f"last failure: {text}"))
    lines = json_log.getvalue().splitlines()
    assert len(lines) == 4 and all(json.loads(line)["logger"].startswith("retention_pipelines") for line in lines)
    assert_no_secret(json_log.getvalue(), canaries)


@pytest.mark.parametrize("event", ["opened", "escalated", "closed"])
def test_no_secret_in_alert_payloads(in_force, event):
    canaries = new_canaries()
    in_force(canaries)
    load_settings()
    alert = Alert("quiz_responses", "run_failures", event, f"3 runs failed; last: {as_a_driver_says(canaries)}",
                  {"failures_in_a_row": 3}, level=2)
    pagerduty = PagerDutyNotifier(canaries["pagerduty_routing_key"]).event(alert)
    assert pagerduty.pop("routing_key") == canaries["pagerduty_routing_key"]  # PagerDuty's credential, its only place
    assert_no_secret(json.dumps([alert.payload(), alert.text, pagerduty]), canaries)


ALERT = Alert("quiz_responses", "retention_lag", "opened", "lag 6h")
HOST = r"127\.0\.0\.1:\d+"
# Each store, built from the settings in force, and how its error names it: by the setting's
# display (scheme://host:port/…).
STORES = {
    "database": (lambda s: AppDatabase(s.database_url).now(),
                 rf"database postgresql\+psycopg2://{HOST}/… is unreachable"),
    "lock service": (lambda s: RedisDomainLocks(s.redis_url, 5.0).acquire("quiz_responses"),
                     rf"lock service redis://{HOST}/… is unreachable"),
    "alert webhook": (lambda s: WebhookNotifier(s.alert_webhook_url, timeout=2, attempts=1).send(ALERT),
                      rf"alert webhook http://{HOST}/… is unreachable"),
    "Slack": (lambda s: SlackNotifier(s.slack_token.get_secret_value(), s.slack_channel, s.slack_api_url,
                                      attempts=1).send(ALERT), rf"Slack \(http://{HOST}/…\) is unreachable"),
    "PagerDuty": (lambda s: PagerDutyNotifier(s.pagerduty_routing_key.get_secret_value(), s.pagerduty_events_url,
                                              timeout=2, attempts=1).send(ALERT),
                  rf"PagerDuty \(http://{HOST}/…\) is unreachable"),
    "every alert channel": (lambda s: notifier(s, get_logger("alerts")).send(ALERT),
                            rf"alert webhook http://{HOST}/… is unreachable"),
    "pushgateway": (lambda s: push_run_metrics(s.pushgateway_url, "quiz_responses", 1, 0, 1.0, 0.0, False),
                    rf"pushgateway http://{HOST} is unreachable"),
    "archive store": (lambda s: archive_store_from_url(s.alert_webhook_url),
                      rf"RETENTION_ARCHIVE_URL http://{HOST}/… is neither"),
    "blob store": (lambda s: blob_store_from_url(s.database_url),
                   rf"RETENTION_BLOB_URL postgresql\+psycopg2://{HOST}/… is neither"),
}


@pytest.mark.parametrize("store", STORES)
def test_no_secret_in_the_errors_the_stores_raise(in_force, store):
    canaries = new_canaries()
    in_force(canaries)
    use, names = STORES[store]
    with pytest.raises(StoreUnavailable) as caught:
        use(load_settings())
    message = str(caught.value)
    assert re.search(names, message), message
    assert_no_secret(message, canaries)


def test_no_secret_when_the_servers_refuse_the_canary_credentials(in_force, postgres_server, redis_url):
    """PostgreSQL quotes the user it refused; Redis refuses an unknown user."""
    canaries = new_canaries()
    in_force(canaries, database=f"127.0.0.1:{postgres_server.port}/postgres", redis=server_of(redis_url))
    settings = load_settings()
    with pytest.raises(StoreUnavailable) as database:
        AppDatabase(settings.database_url).now()
    with pytest.raises(StoreUnavailable) as locks:
        RedisDomainLocks(settings.redis_url, 5.0).acquire("quiz_responses")
    assert 'role "***" does not exist' in str(database.value), database.value
    assert "invalid username-password pair" in str(locks.value), locks.value
    assert_no_secret(f"{database.value}\n{locks.value}", canaries)


# (database, Redis: "none" unreachable, "server" up but without the canary user, "all" up and with
# it) → the dependency that fails and what its row says
HEALTH_CASES = {
    "database unreachable": ("none", "none", "database", "is unreachable"),
    "database refuses the user": ("server", "none", "database", 'role "***" does not exist'),
    "lock service unreachable": ("all", "none", "lock_service", "lock service is unreachable"),
    "lock service refuses the user": ("all", "server", "lock_service", "invalid username-password pair"),
    "everything answers": ("all", "all", None, "reachable"),
}


@pytest.mark.parametrize("case", HEALTH_CASES)
def test_no_secret_in_retention_health(case, cli, in_force, postgres_server, pg_url, redis_url):
    database, redis, failing, words = HEALTH_CASES[case]
    canaries = new_canaries()
    if database == "all":
        create_database_role(postgres_server, canaries["database_user"])
    if redis == "all":
        create_redis_user(redis_url, canaries["redis_user"], canaries["redis_password"])
    in_force(canaries, database=address_of(pg_url) if database != "none" else None,
             redis=server_of(redis_url) if redis != "none" else None)
    outcome = cli("health")
    assert outcome.code == (1 if failing else 0), outcome.text
    assert words in outcome.out, outcome.text
    if failing:
        assert any(line.split()[:2] == [failing, "False"] for line in outcome.out.splitlines()), outcome.out
    assert_no_secret(outcome.text, canaries)


def test_no_secret_in_retention_alerts_test_when_no_channel_answers(cli, in_force):
    canaries = new_canaries()
    in_force(canaries)
    outcome = cli("alerts", "test")
    assert outcome.code == 1, outcome.text
    assert all(name in outcome.err for name in ("alert webhook", "Slack", "PagerDuty")), outcome.err
    assert_no_secret(outcome.text, canaries)


def test_no_secret_in_the_alerts_delivered_by_retention_alerts_test(cli, in_force, receiver):
    canaries = new_canaries()
    in_force(canaries, alerts=receiver.base)
    outcome = cli("alerts", "test")
    assert outcome.code == 0, outcome.text
    # Each service got the credential it takes, and only there.
    assert {auth for _, auth in receiver.slack} == {f"Bearer {canaries['slack_token']}"}
    assert {event.pop("routing_key") for event in receiver.pagerduty} == {canaries["pagerduty_routing_key"]}
    assert ("POST", f"/alerts/{canaries['webhook_token']}") in receiver.requests
    delivered = [receiver.received, [body for body, _ in receiver.slack], receiver.pagerduty]
    assert all(len(bodies) == 2 for bodies in delivered), delivered  # opened and closed
    assert_no_secret(outcome.text + json.dumps(delivered), canaries)


@pytest.mark.parametrize("case", ["database refuses the user", "lock service refuses the user"])
def test_no_secret_in_the_health_assets_event_log(case, in_force, policies, postgres_server, pg_url, redis_url):
    _, _, failing, words = HEALTH_CASES[case]
    canaries = new_canaries()
    if failing == "lock_service":
        create_database_role(postgres_server, canaries["database_user"])
    in_force(canaries, database=address_of(pg_url), redis=server_of(redis_url))
    defs = build_health_defs([p for p in policies.domains.values() if p.enabled])
    with dg.instance_for_test() as instance:
        result = dg.materialize(defs.assets, instance=instance, resources={"retention_stores": RetentionStores()},
                                raise_on_error=False)
        logged = "\n".join(repr(entry) for entry in instance.all_logs(result.run_id))
    assert f"health: {failing}: " in logged and words in logged, logged
    assert_no_secret(logged, canaries)
