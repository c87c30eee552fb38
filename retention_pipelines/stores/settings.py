"""Where the stores are, from environment variables; unset, the embedded demo defaults."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class RetentionSettings(BaseSettings):
    """RETENTION_* environment variables (see README). Unset, everything lives under RETENTION_HOME."""

    model_config = SettingsConfigDict(env_prefix="RETENTION_", extra="ignore")

    home: Path = Path(".retention")
    database_url: str | None = None
    archive_url: str | None = None
    redis_url: str | None = None
    blob_url: str | None = None
    archive_storage_class: str | None = None  # e.g. GLACIER or DEEP_ARCHIVE, for an S3 archive
    alert_webhook_url: str | None = None  # where alerts are POSTed as JSON; unset: a log line
    pushgateway_url: str | None = None  # Prometheus Pushgateway for run metrics; unset: none pushed
    lock_ttl_seconds: float = 60.0
    lock_wait_seconds: float = 0.0
    # How often the retention-lag sensor measures each domain; read when the code location loads.
    lag_sensor_interval_seconds: int = 300

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.home / 'demo.db').resolve()}"

    def resolved_archive_url(self) -> str:
        return self.archive_url or (self.home / "archive").resolve().as_uri()

    def resolved_blob_url(self) -> str:
        return self.blob_url or (self.home / "blobs").resolve().as_uri()

    def lock_dir(self) -> Path:
        return (self.home / "locks").resolve()
