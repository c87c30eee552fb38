"""Canary secrets: a unique, recognisable value in every secret-bearing setting, the environment
that carries them, and a search for them in what the system wrote."""

from __future__ import annotations

import secrets
import uuid

# Every setting (or part of a setting's URL) that is a credential.
SECRET_SETTINGS = ("database_user", "database_password", "redis_user", "redis_password", "webhook_token",
                   "pushgateway_password", "slack_token", "pagerduty_routing_key", "archive_master_key",
                   "erasure_hash_key", "aws_secret_access_key")
USER_NAMES = ("database_user", "redis_user")  # shown nowhere, but masked only where a driver quotes them


def new_canaries() -> dict[str, str]:
    """One fresh value per secret setting, lower-case letters and digits (a valid PostgreSQL role
    and Redis user name); the master key is a usable key (64 hex digits), unique all the same."""
    made = {name: f"canary{name.replace('_', '')}{uuid.uuid4().hex[:12]}" for name in SECRET_SETTINGS}
    made["archive_master_key"] = secrets.token_hex(32)
    return made


def canary_environment(canaries: dict[str, str], database: str, redis: str, alerts: str,
                       pushgateway: str) -> dict[str, str]:
    """The variables that carry every canary. database: host:port/name; redis: host:port;
    alerts: the base URL of the alert channels (AlertReceiver's paths); pushgateway: host:port."""
    c = canaries
    return {
        "RETENTION_DATABASE_URL": f"postgresql+psycopg2://{c['database_user']}:{c['database_password']}@{database}",
        "RETENTION_REDIS_URL": f"redis://{c['redis_user']}:{c['redis_password']}@{redis}/0",
        "RETENTION_ALERT_WEBHOOK_URL": f"{alerts}/alerts/{c['webhook_token']}",
        "RETENTION_SLACK_TOKEN": c["slack_token"], "RETENTION_SLACK_CHANNEL": "#retention-alerts",
        "RETENTION_SLACK_API_URL": f"{alerts}/api/",
        "RETENTION_PAGERDUTY_ROUTING_KEY": c["pagerduty_routing_key"],
        "RETENTION_PAGERDUTY_EVENTS_URL": f"{alerts}/v2/enqueue",
        "RETENTION_PUSHGATEWAY_URL": f"http://metrics:{c['pushgateway_password']}@{pushgateway}",
        "RETENTION_ARCHIVE_MASTER_KEY": c["archive_master_key"],
        "RETENTION_ERASURE_HASH_KEY": c["erasure_hash_key"],
        "AWS_SECRET_ACCESS_KEY": c["aws_secret_access_key"],
    }


def leaked(text: str, canaries: dict[str, str]) -> list[str]:
    """The names of the canaries that occur in `text` (case-insensitively)."""
    text = text.lower()
    return [name for name, value in canaries.items() if value.lower() in text]


def create_database_role(postgres_server, name: str) -> None:
    """A login role on the test server (which trusts loopback: any password is accepted)."""
    import psycopg2

    connection = psycopg2.connect(postgres_server.dsn("postgres"))
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE ROLE "{name}" LOGIN SUPERUSER')
    connection.close()


def create_redis_user(redis_url: str, name: str, password: str) -> None:
    """An ACL user on the test Redis, beside its passwordless default user."""
    import redis

    redis.Redis.from_url(redis_url).execute_command("ACL", "SETUSER", name, "on", f">{password}", "~*", "&*", "+@all")
