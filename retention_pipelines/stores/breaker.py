"""Circuit breakers for the services that sensors, runs and probes call again and again while
they are down: the alert channels, the Pushgateway, the health probes' dependencies.

After `failures` calls in a row fail (each after its own retries), a service's breaker opens: its
calls are refused at once, without touching the service, until `reset_seconds` have passed; then
one probe is let through (half-open), and its success closes the breaker, its failure opens it
again. The state lives in Redis where one is configured (pybreaker's CircuitRedisStorage), so that
every process, run and sensor tick sees the same breaker; without Redis (the demo) it lives in the
process. Exactly one log line says a breaker opened and one that it closed, however many processes
share it: the process whose write changed the shared state says it.

Nothing on the deletion path goes through a breaker: a run whose database, archive or lock is down
fails loudly.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

import pybreaker
import redis

from retention_pipelines.errors import StoreUnavailable, first_line
from retention_pipelines.logs import get_logger

T = TypeVar("T")
NAMESPACE = "retention:breaker"
# A breaker must not hold a call up for long when Redis itself is away: its state is then taken
# as closed (calls go through, as without a breaker) after one short wait per command.
REDIS_TIMEOUT_SECONDS = 2.0
REDIS_TROUBLE_EVERY_SECONDS = 60.0

# Every breaker's lines, and those of the calls its open state skips (scrubbed like every line).
log = get_logger("breaker")


class CircuitOpen(StoreUnavailable):
    """A call refused without calling the service: its breaker is open."""


class ServiceBreaker:
    """One service's breaker. `service` names it in every message and keys its shared state:
    a display name (`display_url`), never a credential."""

    def __init__(self, service: str, failures: int, reset_seconds: float, redis_client=None):
        self.service, self.failures, self.reset_seconds = service, failures, reset_seconds
        self._last_failure = ""
        if redis_client is None:
            storage = _AnnouncingMemoryStorage(self._changed)
        else:
            storage = _AnnouncingRedisStorage(self._changed, redis_client, f"{NAMESPACE}:{service}")
        self.storage = storage  # pybreaker's: closed/open, the failures counted, when it opened
        self._breaker = pybreaker.CircuitBreaker(
            fail_max=failures, reset_timeout=reset_seconds, state_storage=storage, name=service,
            listeners=[_RemembersFailure(self)],
            # The call that trips the breaker did reach the service: its own error says more.
            throw_new_error_on_trip=False)

    @property
    def state(self) -> str:
        """closed, open or half-open, as the shared storage has it."""
        return self._breaker.current_state

    def call(self, function: Callable[..., T], *args, **kwargs) -> T:
        """function(*args, **kwargs) through the breaker; CircuitOpen, without calling it, while open."""
        try:
            return self._breaker.call(function, *args, **kwargs)
        except pybreaker.CircuitBreakerError:
            raise CircuitOpen(f"{self.service}: circuit open after {self._in_a_row}; "
                              f"not called again before {self._next_probe()}") from None

    @property
    def _in_a_row(self) -> str:
        return f"{self.failures} failure{'s' if self.failures != 1 else ''} in a row"

    def _next_probe(self) -> str:
        opened_at = self.storage.opened_at
        if opened_at is None:
            return "its next call"
        return f"{opened_at + timedelta(seconds=self.reset_seconds):%H:%M:%S} UTC"

    def _changed(self, previous: str | None, state: str) -> None:
        """Called by the storage after its write of `state` replaced `previous`: only the process
        whose write changed the shared state says so."""
        if state == pybreaker.STATE_OPEN and previous in (None, pybreaker.STATE_CLOSED):
            log.warning(f"circuit breaker of {self.service} opened after {self._in_a_row} "
                        f"(last: {self._last_failure}): its calls are skipped for {self.reset_seconds:g} s, "
                        "then one probe is let through",
                        extra={"breaker": self.service, "breaker_state": state})
        elif state == pybreaker.STATE_CLOSED and previous not in (None, pybreaker.STATE_CLOSED):
            log.warning(f"circuit breaker of {self.service} closed: a probe succeeded, calls go through again",
                        extra={"breaker": self.service, "breaker_state": state})
        elif state != previous:
            log.debug(f"circuit breaker of {self.service}: {previous} -> {state}",
                      extra={"breaker": self.service, "breaker_state": state})


class _RemembersFailure(pybreaker.CircuitBreakerListener):
    """The failure that trips a breaker, for the line that says it opened (pybreaker calls its
    listeners before it opens the breaker)."""

    def __init__(self, breaker: ServiceBreaker):
        self.breaker = breaker

    def failure(self, cb, exc: BaseException) -> None:
        self.breaker._last_failure = first_line(exc)


class _AnnouncingMemoryStorage(pybreaker.CircuitMemoryStorage):
    """The process's own state (no Redis: the demo)."""

    def __init__(self, changed: Callable[[str | None, str], None]):
        super().__init__(pybreaker.STATE_CLOSED)
        self._changed, self._swap = changed, threading.Lock()

    def _set_state(self, state: str) -> None:
        with self._swap:
            previous, self._state = self._state, state
        self._changed(previous, state)

    state = property(pybreaker.CircuitMemoryStorage.state.fget, _set_state)


class _RedisTrouble:
    """pybreaker logs every Redis command that fails, with its traceback, several per call: while
    Redis is away one line a minute says so."""

    def __init__(self):
        self.said_at = -REDIS_TROUBLE_EVERY_SECONDS
        self.lock = threading.Lock()

    def exception(self, message: str, *args) -> None:
        with self.lock:
            if time.monotonic() - self.said_at < REDIS_TROUBLE_EVERY_SECONDS:
                return
            self.said_at = time.monotonic()
        error = sys.exc_info()[1]
        log.warning("circuit breakers cannot reach their state in Redis "
                    f"({first_line(error) if error else message}): their calls go through meanwhile")


class _AnnouncingRedisStorage(pybreaker.CircuitRedisStorage):
    """The state in Redis, shared by every process: a change of state is one atomic GETSET, so
    that of two processes making the same change only the first announces it."""

    logger = _RedisTrouble()

    def __init__(self, changed: Callable[[str | None, str], None], redis_client, namespace: str):
        self._changed = changed
        super().__init__(pybreaker.STATE_CLOSED, redis_client, namespace=namespace)

    def _initialize_redis_state(self, state: str) -> None:
        try:
            super()._initialize_redis_state(state)
        except redis.exceptions.RedisError:
            self.logger.exception("RedisError")

    def _set_state(self, state: str) -> None:
        try:
            previous = self._redis.getset(self._namespace("state"), state)
        except redis.exceptions.RedisError:
            self.logger.exception("RedisError")
            return
        self._changed(previous.decode() if previous is not None else None, state)

    state = property(pybreaker.CircuitRedisStorage.state.fget, _set_state)


class Breakers:
    """The breakers of this process, one per service, shared by every caller in it (a code
    server's sensor ticks, the health asset's runs): without Redis their state must outlive the
    notifier or resource that asked for it."""

    _known: dict[tuple, ServiceBreaker] = {}
    _clients: dict[str, object] = {}
    _lock = threading.Lock()

    def __init__(self, redis_url: str | None, failures: int, reset_seconds: float):
        self.redis_url, self.failures, self.reset_seconds = redis_url, failures, reset_seconds

    @classmethod
    def from_settings(cls, settings) -> Breakers:
        return cls(settings.redis_url, settings.breaker_failures, settings.breaker_reset_seconds)

    def __call__(self, service: str) -> ServiceBreaker:
        key = (service, self.redis_url, self.failures, self.reset_seconds)
        with self._lock:
            if key not in self._known:
                self._known[key] = ServiceBreaker(service, self.failures, self.reset_seconds, self._client())
            return self._known[key]

    @classmethod
    def forget_all(cls) -> None:
        """Every breaker of the process closed and forgotten (those in Redis keep their state): for
        a process that starts afresh, as each test does."""
        with cls._lock:
            cls._known.clear()

    def _client(self):
        if not self.redis_url:
            return None
        if self.redis_url not in self._clients:
            self._clients[self.redis_url] = redis.Redis.from_url(
                self.redis_url, socket_connect_timeout=REDIS_TIMEOUT_SECONDS, socket_timeout=REDIS_TIMEOUT_SECONDS)
        return self._clients[self.redis_url]

