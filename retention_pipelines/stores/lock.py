"""One lock per domain, so that two runs never clean the same domain at once."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from abc import ABC, abstractmethod
from pathlib import Path

from retention_pipelines.errors import DomainLocked, LockLost, StoreUnavailable, first_line
from retention_pipelines.logs import get_logger
from retention_pipelines.redaction import display_url

log = get_logger("lock")


class HeldLock(ABC):
    domain: str

    @abstractmethod
    def ensure_held(self) -> None:
        """Raise LockLost unless this run still holds the lock."""

    @abstractmethod
    def release(self) -> None: ...


class DomainLocks(ABC):
    @abstractmethod
    def acquire(self, domain: str, wait_seconds: float = 0.0) -> HeldLock:
        """Take the domain's lock, waiting up to wait_seconds; DomainLocked if still taken."""


def _locked_message(domain: str, waited: float) -> str:
    waited_text = f" after waiting {waited:g}s" if waited else ""
    return f"domain {domain} is being cleaned by another run (its lock is held){waited_text}; nothing was done"


def _log_waiting(domain: str, wait_seconds: float) -> None:
    """One line when a run starts to wait for a busy domain, so that a run that seems stuck says why;
    a warning, so that the CLI's terminal (which shows warnings and worse) says it too."""
    log.warning(f"domain {domain} is busy (another run holds its lock): waiting up to {wait_seconds:g}s for it",
             extra={"lock_wait_seconds": wait_seconds})


def _log_taken_after(domain: str, started: float) -> None:
    log.info(f"domain {domain}: its lock is free, taken after waiting {time.monotonic() - started:.1f}s")


class FileDomainLocks(DomainLocks):
    """flock(2) on a file per domain: the kernel releases it when the holder dies, even by SIGKILL."""

    def __init__(self, folder: Path):
        self.folder = folder

    def acquire(self, domain: str, wait_seconds: float = 0.0) -> HeldLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / f"{domain}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        started, waiting = time.monotonic(), False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= started + wait_seconds:
                    os.close(fd)
                    raise DomainLocked(_locked_message(domain, wait_seconds)) from None
                if not waiting:
                    _log_waiting(domain, wait_seconds)
                    waiting = True
                time.sleep(0.2)
                continue
            if waiting:
                _log_taken_after(domain, started)
            return _FileHeldLock(domain, fd)


class _FileHeldLock(HeldLock):
    def __init__(self, domain: str, fd: int):
        self.domain, self._fd = domain, fd

    def ensure_held(self) -> None:
        if self._fd is None:
            raise LockLost(f"domain {self.domain}: lock already released")

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


class RedisDomainLocks(DomainLocks):
    """A Redis lock per domain with a TTL, renewed by a thread while the run lives.

    A run that dies stops renewing, so its lock expires after the TTL and the next run proceeds.
    """

    def __init__(self, url: str, ttl_seconds: float = 60.0):
        import redis

        self.ttl = ttl_seconds
        self.client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=10)
        self.display_url = display_url(url)

    def acquire(self, domain: str, wait_seconds: float = 0.0) -> HeldLock:
        import redis

        lock = self.client.lock(f"retention:lock:{domain}", timeout=self.ttl, thread_local=False)
        try:
            acquired = lock.acquire(blocking=False)
            if not acquired and wait_seconds > 0:
                _log_waiting(domain, wait_seconds)
                started = time.monotonic()
                acquired = lock.acquire(blocking=True, blocking_timeout=wait_seconds)
                if acquired:
                    _log_taken_after(domain, started)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            raise StoreUnavailable(f"lock service {self.display_url} is unreachable: {exc}") from None
        if not acquired:
            raise DomainLocked(_locked_message(domain, wait_seconds))
        return _RedisHeldLock(domain, lock, self.ttl, self.display_url)


def _unreachable(exc: Exception) -> str | None:
    """Redis's own one-line reason when `exc` says the lock service cannot be reached, else None."""
    import redis

    if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
        return first_line(exc)
    return None


class _RedisHeldLock(HeldLock):
    def __init__(self, domain: str, lock, ttl: float, service: str):
        self.domain, self._lock, self._lost, self._service = domain, lock, False, service
        self._unreachable: str | None = None  # why the lock service could not be reached, if it could not
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew, args=(ttl / 3,), daemon=True, name=f"lock-{domain}")
        self._renewer.start()

    def _renew(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                self._lock.reacquire()
            except Exception as exc:  # expired, taken over, or Redis gone: the run must stop deleting
                self._unreachable = _unreachable(exc)
                self._lost = True
                return

    def ensure_held(self) -> None:
        try:
            owned = not self._lost and self._lock.owned()
        except Exception as exc:
            self._unreachable, owned = _unreachable(exc) or self._unreachable, False
        if not owned:
            if self._unreachable:  # the operator must hear which dependency failed, not only that the lock went
                raise LockLost(f"domain {self.domain}: lock service {self._service} is unreachable "
                               f"({self._unreachable}); stopping before the next batch")
            raise LockLost(f"domain {self.domain}: the run's lock expired or was lost; stopping before the next batch")

    def release(self) -> None:
        self._stop.set()
        try:
            self._lock.release()
        except Exception:  # already expired: nothing to give back
            pass


def domain_locks(redis_url: str | None, lock_dir: Path | None, ttl_seconds: float) -> DomainLocks:
    return RedisDomainLocks(redis_url, ttl_seconds) if redis_url else FileDomainLocks(lock_dir)
