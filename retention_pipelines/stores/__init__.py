"""Small interfaces to the outside world, each with its production part and its embedded default."""

from retention_pipelines.stores.archive import ArchiveStore, archive_store_from_url
from retention_pipelines.stores.blob import BlobStore, blob_store_from_url
from retention_pipelines.stores.database import AppDatabase, PolicyMismatch, StoreUnavailable
from retention_pipelines.stores.dialect import Dialect
from retention_pipelines.stores.lock import DomainLocked, DomainLocks, HeldLock, LockLost, domain_locks
from retention_pipelines.stores.settings import ConfigurationError, RetentionSettings, load_settings

__all__ = [
    "AppDatabase", "ArchiveStore", "ConfigurationError", "load_settings", "BlobStore", "blob_store_from_url",
    "Dialect", "DomainLocked", "DomainLocks", "HeldLock", "LockLost",
    "PolicyMismatch", "RetentionSettings", "StoreUnavailable", "archive_store_from_url", "domain_locks",
]
