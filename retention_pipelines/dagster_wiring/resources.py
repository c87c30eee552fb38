"""The stores, as one Dagster resource: database, archive store and domain locks for a run."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg
from pydantic import PrivateAttr

from retention_pipelines.engine import RetentionEngine
from retention_pipelines.engine.archive.keys import ArchiveKeys
from retention_pipelines.engine.gdpr.erasure_run import SubjectErasure
from retention_pipelines.engine.gdpr.requests import ErasureRequests
from retention_pipelines.logs import get_logger
from retention_pipelines.policies import DomainPolicy
from retention_pipelines.stores import (
    AppDatabase,
    ArchiveStore,
    BlobStore,
    DomainLocks,
    HeldLock,
    RetentionSettings,
    StoreUnavailable,
    archive_store_from_url,
    blob_store_from_url,
    domain_locks,
    load_settings,
)
from retention_pipelines.stores.breaker import Breakers
from retention_pipelines.stores.metrics import push_through_breaker
from retention_pipelines.stores.notifier import Notifier, notifier


class RetentionStores(dg.ConfigurableResource):
    """Where retention runs read, archive and lock. Fields left unset come from the RETENTION_*
    environment variables (see README), so that no connection string with a password is ever
    part of the run's configuration shown in the UI."""

    database_url: str | None = None
    archive_url: str | None = None
    redis_url: str | None = None
    blob_url: str | None = None
    alert_webhook_url: str | None = None
    pushgateway_url: str | None = None
    lock_wait_seconds: float | None = None

    _database: AppDatabase | None = PrivateAttr(default=None)
    _archive: ArchiveStore | None = PrivateAttr(default=None)
    _blobs: BlobStore | None = PrivateAttr(default=None)
    _engines: dict = PrivateAttr(default_factory=dict)
    _keys: ArchiveKeys | None = PrivateAttr(default=None)
    _locks: DomainLocks | None = PrivateAttr(default=None)
    _held: dict[str, HeldLock] = PrivateAttr(default_factory=dict)

    def settings(self) -> RetentionSettings:
        # The resource's fields are the settings' own names: those set here win over the environment.
        overrides = {name: value for name, value in self.model_dump().items() if value is not None}
        return load_settings(**overrides)

    @property
    def database(self) -> AppDatabase:
        if self._database is None:
            self._database = AppDatabase(self.settings().resolved_database_url())
        return self._database

    @property
    def archive_store(self) -> ArchiveStore:
        if self._archive is None:
            settings = self.settings()
            self._archive = archive_store_from_url(settings.resolved_archive_url(), settings.archive_storage_class,
                                                   settings.archive_batch_storage_class,
                                                   settings.archive_object_lock_mode)
        return self._archive

    @property
    def blob_store(self) -> BlobStore:
        if self._blobs is None:
            self._blobs = blob_store_from_url(self.settings().resolved_blob_url())
        return self._blobs

    @property
    def notifier(self) -> Notifier:
        return notifier(self.settings(), get_logger("alerts"))

    def push_metrics(self, context, domain: str, acted, lag) -> bool:
        """The run's figures to the Pushgateway, where one is configured. Metrics that cannot be
        pushed are logged, not fatal: the retention work of the run is done and audited; while the
        Pushgateway's breaker is open they are not even tried (a warning line says so)."""
        settings = self.settings()
        url = settings.pushgateway_url
        if not url or acted.dry_run:
            return False
        try:
            return push_through_breaker(Breakers.from_settings(settings), url, domain, acted.acted_on, acted.failed,
                                        acted.seconds, lag.total_seconds())
        except StoreUnavailable as exc:
            context.log.error(str(exc))
            return False

    @property
    def archive_keys(self) -> ArchiveKeys:
        """The data keys of the encrypted archives, wrapped by RETENTION_ARCHIVE_MASTER_KEY."""
        if self._keys is None:
            settings = self.settings()
            self._keys = ArchiveKeys(self.database, settings.resolved_archive_master_key(),
                                     settings.resolved_erasure_hash_key())
        return self._keys

    def subject_erasure(self, policy_version: str, policies: list[DomainPolicy] = ()) -> SubjectErasure:
        settings = self.settings()
        requests = ErasureRequests(self.database, settings.resolved_erasure_hash_key(),
                                   timedelta(days=settings.erasure_due_days))
        return SubjectErasure(requests, self.archive_keys, self.archive_store, policy_version, policies)

    def engine(self, policy: DomainPolicy, policy_version: str) -> RetentionEngine:
        """The domain's engine, built once per run (it checks the migrations and reflects the table)."""
        key = (policy.name, policy_version)
        if key not in self._engines:
            self._engines[key] = RetentionEngine(
                policy, policy_version, self.database, self.archive_store,
                blob_store=self.blob_store if policy.blob_key_column else None,
                keys=self.archive_keys if policy.archive.enabled else None,
                blob_bytes_in_flight=self.settings().blob_bytes_in_flight)
        return self._engines[key]

    def hold_domain_lock(self, domain: str, wait_seconds: float | None = None) -> HeldLock:
        """The domain's lock, taken by the run's first step and kept until the run ends. A lock
        another run holds is waited for (RETENTION_LOCK_WAIT_SECONDS unless `wait_seconds` says),
        with a log line naming the busy domain; past the wait, DomainLocked, nothing done.

        Domain jobs run their steps in one process (in_process_executor), where this resource
        lives once per run: the lock covers find, archive, act and audit together."""
        if domain not in self._held:
            # The settings are read only where needed: a batch of erasures takes each lock once a request.
            settings = self.settings() if self._locks is None or wait_seconds is None else None
            if self._locks is None:
                self._locks = domain_locks(settings.redis_url, settings.lock_dir(), settings.lock_ttl_seconds)
            wait = settings.lock_wait_seconds if wait_seconds is None else wait_seconds
            self._held[domain] = self._locks.acquire(domain, wait)
        return self._held[domain]

    def release_domain_locks(self) -> None:
        """Give back the domain locks held so far. A run of many requests for erasure holds them for
        one request at a time, so that a domain's retention run waits for one request, not the batch."""
        for lock in self._held.values():
            lock.release()
        self._held.clear()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self.close()

    def close(self) -> None:
        """Give back the run's locks and the database connections."""
        self.release_domain_locks()
        if self._database is not None:
            self._database.dispose()
