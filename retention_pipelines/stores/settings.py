"""Where the stores are, from environment variables; unset, the embedded demo defaults."""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

from pydantic import SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from retention_pipelines.errors import ConfigurationError
from retention_pipelines.redaction import remember_secrets, url_secrets
from retention_pipelines.stores.files import write_whole

# The accepted range of each numeric setting, (lowest, highest, unit); a value outside it (NaN and
# infinities too) is refused when the settings are read, naming the variable and the range.
# A day at most: a run that waits longer for a stuck one would outlast the next daily tick, hiding
# the stuck run instead of failing and saying so.
MAX_LOCK_WAIT_SECONDS = 86_400
RANGES = {
    # At least 15 s: the Redis lock is renewed every TTL/3 by a call that may wait out the Redis
    # client's 10 s socket timeout (stores/lock.py), so a shorter TTL could expire under a run that
    # is merely slow; 15 s is also longer than the 10 s the pacing may give one batch transaction
    # (Pacing.batch_target_ms). At most an hour: a run that dies keeps its domain locked until the
    # TTL runs out, and an hourly domain must not lose more than its next run to that.
    "lock_ttl_seconds": (15, 3_600, "seconds"),
    "lock_wait_seconds": (0, MAX_LOCK_WAIT_SECONDS, "seconds"),
    "erasure_lock_wait_seconds": (0, MAX_LOCK_WAIT_SECONDS, "seconds"),
    # GDPR Art. 12(3): a request is answered within one month of receipt, a period that may be
    # extended by two further months where necessary; no deadline may lie beyond 90 days, and the
    # default is the ordinary month.
    "erasure_due_days": (1, 90, "days"),
    # At most 10,000 requests in one erasure run: its run config lists them, and a run that takes
    # hours holds the app_database pool from every other erasure for as long.
    "erasure_batch_size": (1, 10_000, "requests"),
    # At least hourly: the shortest sla.max_lag of the shipped policies is an hour, and a breach
    # must be seen within it.
    "lag_sensor_interval_seconds": (1, 3_600, "seconds"),
    # A century at most: S3 accepts any date, and a typo of a few more digits would lock the
    # anchors under COMPLIANCE for good.
    "audit_anchor_keep_days": (1, 36_525, "days"),
    # The circuit breakers of the alert channels, the Pushgateway and the health probes
    # (stores/breaker.py): at least one failure before opening; at most a day open before a probe,
    # so that a service back up is seen again within a day whatever the setting.
    "breaker_failures": (1, 1_000, "failures"),
    "breaker_reset_seconds": (1, 86_400, "seconds"),
    # Dagster's own history (dagster_wiring/history_purge.py): a week at least, so that last week's
    # failures can still be read; a century at most, as for any period here.
    "purge_runs_after_days": (7, 36_525, "days"),
    "purge_erasure_runs_after_days": (7, 36_525, "days"),
    "purge_latest_materializations_after_days": (7, 36_525, "days"),
    # What a run's PDF copies may hold in memory at once: a MiB at least (one chunk), 64 GiB at
    # most, more memory than a run is given anywhere.
    "blob_bytes_in_flight": (1024 * 1024, 64 * 1024**3, "bytes"),
    # Trimming touches successful runs only, so a day is short but not unsafe.
    "purge_run_details_after_days": (1, 36_525, "days"),
}

# How long an audit anchor is locked (under an Object Lock mode): ten years, no shorter than the
# longest archive keep_for of the shipped policies (3650d), so that the anchors outlive the
# evidence they vouch for.
AUDIT_ANCHOR_KEEP_DAYS = 3_653

# S3 storage classes an object can be read from at once, without a restore.
INSTANT_READ_STORAGE_CLASSES = ("STANDARD", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER_IR")
OBJECT_LOCK_MODES = ("GOVERNANCE", "COMPLIANCE")

# What a deployment must name itself: outside the demo (RETENTION_ENV=demo) nothing falls back to the
# embedded defaults, so that a missing variable refuses at load instead of running on an empty demo.
REQUIRED_OUTSIDE_DEMO = ("RETENTION_DATABASE_URL", "RETENTION_ARCHIVE_URL", "RETENTION_BLOB_URL",
                         "RETENTION_REDIS_URL", "RETENTION_ARCHIVE_MASTER_KEY", "RETENTION_ERASURE_HASH_KEY")


DEMO = "demo"
ENVIRONMENTS = (DEMO, "production")


class RetentionSettings(BaseSettings):
    """RETENTION_* environment variables (see README). In the demo (RETENTION_ENV=demo) what is
    unset lives under RETENTION_HOME; anywhere else every store and key must be named."""

    model_config = SettingsConfigDict(env_prefix="RETENTION_", extra="ignore")

    # Production unless the demo is asked for: a deployment that forgot a variable must refuse to
    # load, not enforce nothing on an empty demo database while the app's data stays.
    env: str = "production"
    home: Path = Path(".retention")
    database_url: str | None = None
    archive_url: str | None = None
    redis_url: str | None = None
    blob_url: str | None = None
    archive_storage_class: str | None = None  # e.g. GLACIER or DEEP_ARCHIVE, for an S3 archive
    # The S3 storage class of archived batches and their manifests: each is read back right after it
    # is written (verified before any row goes), so only a class readable at once will do.
    archive_batch_storage_class: str | None = None
    # S3 Object Lock on every archive object of a domain, until written + the domain's keep_for:
    # GOVERNANCE (a privileged user may lift it) or COMPLIANCE (nobody may). Unset: no lock.
    archive_object_lock_mode: str | None = None
    # With an Object Lock mode, each audit anchor is locked until written + this many days.
    audit_anchor_keep_days: int = AUDIT_ANCHOR_KEEP_DAYS
    # Alerts go to every channel configured here; none configured: a JSON log line.
    alert_webhook_url: str | None = None  # a generic JSON webhook (or a Slack incoming webhook)
    slack_token: SecretStr | None = None  # a Slack bot token with chat:write
    slack_channel: str | None = None
    slack_api_url: str | None = None  # another Slack API host; default Slack's own
    pagerduty_routing_key: SecretStr | None = None  # an Events API v2 integration key
    pagerduty_events_url: str | None = None  # e.g. https://events.eu.pagerduty.com/v2/enqueue
    pushgateway_url: str | None = None  # Prometheus Pushgateway for run metrics; unset: none pushed
    lock_ttl_seconds: float = 60.0
    # A retention run (and an archive expiry, a queue retry, a restore) that finds its domain's lock
    # held waits this long for it, then fails changing nothing. The domain's pool keeps two retention
    # runs of a domain apart, so the holder is an erasure run (in the pool `app_database`), a queue
    # retry or a restore: work of minutes, which the scheduled run waits out instead of failing.
    lock_wait_seconds: float = 300.0
    # Erasure requests: how long the company has (GDPR Art. 12(3): a month), and the secret key of
    # the hash that replaces a subject's address once the request is complete. Unset, the key is
    # made once and kept in RETENTION_HOME (the demo); production sets it from a secret store.
    erasure_due_days: int = 30
    # An erasure run takes every domain's lock in turn: it waits this long for a scheduled run to end.
    erasure_lock_wait_seconds: float = 600.0
    # The erasure sensor launches one run for up to this many requests that are ready: the run queue
    # starts a run of the app_database pool every few seconds, so a backlog drains by the batch,
    # not by the run; each request is still erased, completed and recorded on its own in that run.
    erasure_batch_size: int = 300
    erasure_hash_key: SecretStr | None = None
    # The master key of the encrypted archives (32 bytes, base64 or hex): it wraps every data key.
    # Lose it and no archive can be read; leak it with the database and every live subject's can.
    # Unset, it is made once and kept in RETENTION_HOME (the demo); production sets it from a
    # secret store.
    archive_master_key: SecretStr | None = None
    # How often the retention-lag sensor measures each domain; read when the code location loads.
    lag_sensor_interval_seconds: int = 300
    # A breaker opens after this many failed calls in a row to its service (each after its retries),
    # and lets one probe through this long after it opened: an alert channel, the Pushgateway or a
    # probed dependency that is down is then not called on every sensor tick, run and probe.
    breaker_failures: int = 5
    breaker_reset_seconds: float = 300.0
    # How long Dagster keeps its runs and their event logs. Routine runs: a quarter, enough to read
    # back an incident; the audit log and the monthly reports are the evidence of record.
    purge_runs_after_days: int = 90
    # Erasure runs, once their request is completed and in its month's report: a year and a month,
    # so that a yearly audit finds the runs of the year it looks at.
    purge_erasure_runs_after_days: int = 400
    # A run holding the latest materialization of an asset partition (what auditors read in the UI)
    # stays at least this long. A quarter, as routine runs: a domain's hourly windows are each
    # materialized once, so a longer age keeps every retention run that long (the instance grows by
    # 48 runs a day for each day added); the monthly report, made on the 1st from the audit log, holds
    # the same facts by then. Raise it where auditors read the windows in the UI for longer.
    purge_latest_materializations_after_days: int = 90
    # The bytes a run's PDF copies hold in memory at once (each is streamed; see
    # engine/retention/blobs.py): a copy of a large PDF takes 11 MiB of it, of a small one about
    # three times its size, so the default copies two large PDFs at a time, or many small: a run's
    # memory grows by at most a quarter of an engine process's own (about 125 MB).
    blob_bytes_in_flight: int = 32 * 1024 * 1024
    # A successful run's event log keeps, past this age, what it is read for (its start and end,
    # materializations, check evaluations, log lines, op outputs); how the engine ran it and the
    # outputs that its materializations and check evaluations repeat go (history_deletion.py). A
    # week: a run is looked at in detail in the days after it ran. This roughly halves the event log
    # of the kept quarter, which the health probe's runs (nine checks every 15 minutes) dominate.
    purge_run_details_after_days: int = 7

    @field_validator(*RANGES)
    @classmethod
    def _in_range(cls, value: float, info: ValidationInfo) -> float:
        low, high, _ = RANGES[info.field_name]
        if not low <= value <= high:  # NaN fails every comparison, so it is refused too
            raise ValueError(accepted_range(info.field_name))
        return value

    @field_validator("env", mode="before")
    @classmethod
    def _known_environment(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip().lower()
            if value not in ENVIRONMENTS:
                raise ValueError(f"must be {' or '.join(ENVIRONMENTS)}")
        return value

    @model_validator(mode="after")
    def _complete_outside_demo(self) -> RetentionSettings:
        missing = [name for name in REQUIRED_OUTSIDE_DEMO if not self._named(name)]
        if missing and not self.is_demo:
            raise ValueError(f"not set: {', '.join(missing)}. Outside the demo every store and key must be named "
                             "(README, Configuration); for the embedded demo set RETENTION_ENV=demo")
        return self

    def _named(self, variable: str) -> bool:
        value = getattr(self, variable.removeprefix("RETENTION_").lower())
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        return bool(text and str(text).strip())

    @property
    def is_demo(self) -> bool:
        return self.env == DEMO

    @field_validator("archive_batch_storage_class", "archive_object_lock_mode", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.strip().upper() or None if isinstance(value, str) else value

    @field_validator("archive_batch_storage_class")
    @classmethod
    def _readable_at_once(cls, value: str | None) -> str | None:
        if value is not None and value not in INSTANT_READ_STORAGE_CLASSES:
            raise ValueError(f"must be one of {', '.join(INSTANT_READ_STORAGE_CLASSES)}: archived batches are read "
                             "back right after they are written, so their storage class must be readable at once "
                             "(GLACIER and DEEP_ARCHIVE are for RETENTION_ARCHIVE_STORAGE_CLASS, the PDFs)")
        return value

    @field_validator("archive_object_lock_mode")
    @classmethod
    def _lock_mode(cls, value: str | None) -> str | None:
        if value is not None and value not in OBJECT_LOCK_MODES:
            raise ValueError(f"must be {' or '.join(OBJECT_LOCK_MODES)} (or unset: no Object Lock)")
        return value

    @model_validator(mode="after")
    def _object_lock_needs_s3(self) -> RetentionSettings:
        if self.archive_object_lock_mode and not (self.archive_url or "").startswith("s3://"):
            raise ValueError("RETENTION_ARCHIVE_OBJECT_LOCK_MODE is set but RETENTION_ARCHIVE_URL is not an s3:// "
                             "URL: only S3 has Object Lock (on a bucket created with it enabled)")
        return self

    @model_validator(mode="after")
    def _slack_needs_a_channel(self) -> RetentionSettings:
        if self.slack_token and not self.slack_channel:
            raise ValueError("RETENTION_SLACK_TOKEN is set but RETENTION_SLACK_CHANNEL is not: "
                             "name the channel alerts go to")
        return self

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        self._demo_only("RETENTION_DATABASE_URL")
        return f"sqlite:///{(self.home / 'demo.db').resolve()}"

    def resolved_archive_url(self) -> str:
        if self.archive_url:
            return self.archive_url
        self._demo_only("RETENTION_ARCHIVE_URL")
        return (self.home / "archive").resolve().as_uri()

    def resolved_blob_url(self) -> str:
        if self.blob_url:
            return self.blob_url
        self._demo_only("RETENTION_BLOB_URL")
        return (self.home / "blobs").resolve().as_uri()

    def resolved_erasure_hash_key(self) -> bytes:
        if self.erasure_hash_key:
            return self.erasure_hash_key.get_secret_value().encode()
        key_file = self._demo_key_file("erasure_hash.key", "RETENTION_ERASURE_HASH_KEY")
        key = key_file.read_text().strip()
        remember_secrets([key])
        if not key:
            raise ConfigurationError(f"the erasure hash key file {key_file} is empty: restore it, or set "
                                     "RETENTION_ERASURE_HASH_KEY")
        return key.encode()

    def resolved_archive_master_key(self) -> bytes:
        if self.archive_master_key:
            return _key_bytes(self.archive_master_key.get_secret_value(), "RETENTION_ARCHIVE_MASTER_KEY")
        key_file = self._demo_key_file("archive_master.key", "RETENTION_ARCHIVE_MASTER_KEY")
        key = key_file.read_text().strip()
        remember_secrets([key])
        return _key_bytes(key, f"the archive master key file {key_file}")

    def _demo_key_file(self, name: str, variable: str) -> Path:
        """The demo's key, made once and kept in RETENTION_HOME. Nowhere else is a key ever made:
        a key generated on a disk that a deploy wipes leaves every archive written under it unreadable."""
        self._demo_only(variable)
        key_file = (self.home / name).resolve()
        if not key_file.exists():
            _publish_once(key_file, secrets.token_hex(32))
        return key_file

    def _demo_only(self, variable: str) -> None:
        if not self.is_demo:
            raise ConfigurationError(f"{variable} is not set, and only the demo (RETENTION_ENV=demo) falls back "
                                     "to RETENTION_HOME")

    def lock_dir(self) -> Path | None:
        """The demo's file locks; None where Redis holds the locks."""
        if self.redis_url:
            return None
        self._demo_only("RETENTION_REDIS_URL")
        return (self.home / "locks").resolve()

    def credentials(self) -> tuple[list[str], list[str]]:
        """What no message may quote, as (secrets, user names): the keys and tokens, the
        credentials inside the URLs (the alert webhook's URL is itself one), and the AWS secret
        that boto3 reads from the environment."""
        keys = (self.slack_token, self.pagerduty_routing_key, self.archive_master_key, self.erasure_hash_key)
        found = [key.get_secret_value() for key in keys if key]
        found += [os.environ.get(name) for name in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")]
        users: list[str] = []
        urls = [(url, False) for url in (self.database_url, self.redis_url, self.archive_url, self.blob_url,
                                         self.slack_api_url, self.pagerduty_events_url, self.pushgateway_url)]
        for url, capability in [*urls, (self.alert_webhook_url, True)]:
            in_url, users_in_url = url_secrets(url, capability)
            found += in_url
            users += users_in_url
        return [value for value in found if value], users


def _key_bytes(text: str, where: str) -> bytes:
    """32 bytes written as 64 hex digits or as base64; anything else is refused, naming where."""
    try:
        key = bytes.fromhex(text) if len(text) == 64 else base64.b64decode(text, validate=True)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise ConfigurationError(f"{where}: must be 32 random bytes, as 64 hex digits or base64 "
                                 "(e.g. `openssl rand -hex 32`)")
    return key


def _publish_once(path: Path, content: str) -> None:
    """Write `content` to `path` unless another process got there first (the losers keep the
    winner's content): a key must never change once something was encrypted or hashed with it."""
    write_whole(path, content.encode(), keep_existing=True)


def accepted_range(field: str) -> str:
    """What a numeric setting accepts, in words: said alike for a value out of range and one that
    is no number at all."""
    low, high, unit = RANGES[field]
    kind = "a whole number" if RetentionSettings.model_fields[field].annotation is int else "a number"
    return f"must be {kind} from {low} to {high} {unit}"


def load_settings(**overrides) -> RetentionSettings:
    """The settings, or a ConfigurationError naming each variable that is wrong and why."""
    try:
        settings = RetentionSettings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = error["loc"][0] if error["loc"] else None
            message = accepted_range(field) if field in RANGES else error["msg"].removeprefix("Value error, ")
            where = "_".join(str(part) for part in error["loc"]).upper()
            problems.append(f"RETENTION_{where}: {message}" if where else message)
        raise ConfigurationError("configuration: " + "; ".join(problems)) from None
    remember_secrets(*settings.credentials())  # from here on, no message of this process quotes them
    return settings
