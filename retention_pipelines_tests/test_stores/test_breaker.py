"""Circuit breakers on real services: their state in a real Redis shared by two breakers (as two
processes or two sensor ticks hold them), a real HTTP server that fails and counts what reaches
it, and closed loopback ports for services that are down."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
import redis

from retention_pipelines.stores import StoreUnavailable
from retention_pipelines.stores.breaker import Breakers, CircuitOpen, ServiceBreaker
from retention_pipelines_tests.support.failing_service import FailingService
from retention_pipelines_tests.support.servers import free_port

BREAKER_LOGGER = "retention_pipelines.breaker"
# Redis keeps when a breaker opened in whole seconds: a reset of 3 s is refused for 2 s at least,
# and over for certain 3.2 s after it opened.
RESET_SECONDS = 3


@pytest.fixture
def failing():
    service = FailingService()
    yield service
    service.stop()


def shared(redis_url: str, service: str, failures: int = 3, reset: float = 60) -> list[ServiceBreaker]:
    """Two breakers of one service, each with its own connection to Redis: two processes."""
    return [ServiceBreaker(service, failures, reset, redis.Redis.from_url(redis_url)) for _ in range(2)]


def said(caplog, word: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == BREAKER_LOGGER and r.levelno >= logging.WARNING and f" {word}" in r.getMessage()
            and r.getMessage().startswith("circuit breaker of")]


def test_failures_in_one_process_open_the_breaker_for_the_other(redis_url, failing, caplog):
    first, second = shared(redis_url, f"test service {failing.url}")
    with caplog.at_level(logging.DEBUG, logger=BREAKER_LOGGER):
        for breaker in (first, second, first):  # the failures add up across the two
            with pytest.raises(urllib.error.HTTPError):
                breaker.call(failing.call)
        assert failing.requests == 3 and first.state == second.state == "open"
        for breaker in (second, first, second, first):
            with pytest.raises(CircuitOpen, match=r"circuit open after 3 failures in a row; not called again before"):
                breaker.call(failing.call)
    assert failing.requests == 3, "an open breaker called the service"
    [opened] = said(caplog, "opened")
    assert f"test service {failing.url}" in opened and "HTTP Error 500" in opened
    assert said(caplog, "closed") == []


def test_a_success_between_failures_keeps_the_breaker_closed(redis_url, failing):
    first, second = shared(redis_url, f"test service {failing.url}")
    for status in (500, 500, 204, 500, 500, 204, 500, 500):
        failing.status = status
        try:
            (first if failing.requests % 2 else second).call(failing.call)
        except urllib.error.HTTPError:
            pass
    assert failing.requests == 8 and first.state == "closed"


def test_after_the_reset_one_probe_goes_through_and_its_success_closes_the_breaker(redis_url, failing, caplog):
    first, second = shared(redis_url, f"test service {failing.url}", failures=2, reset=RESET_SECONDS)
    with caplog.at_level(logging.DEBUG, logger=BREAKER_LOGGER):
        for breaker in (first, second):
            with pytest.raises(urllib.error.HTTPError):
                breaker.call(failing.call)
        with pytest.raises(CircuitOpen):
            first.call(failing.call)
        assert failing.requests == 2

        time.sleep(RESET_SECONDS + 0.2)
        with pytest.raises(urllib.error.HTTPError):  # the probe, still failing: open again
            second.call(failing.call)
        assert failing.requests == 3
        for breaker in (first, second):
            with pytest.raises(CircuitOpen):
                breaker.call(failing.call)
        assert failing.requests == 3 and first.state == "open"

        time.sleep(RESET_SECONDS + 0.2)
        failing.status = 204
        first.call(failing.call)  # the probe succeeds: closed, for both
        assert first.state == second.state == "closed"
        for breaker in (second, first, second):
            breaker.call(failing.call)
        assert failing.requests == 7
    assert len(said(caplog, "opened")) == 1, caplog.text
    [closed] = said(caplog, "closed")
    assert "a probe succeeded" in closed


SECOND_PROCESS = """
import sys, urllib.request, redis
from retention_pipelines.stores.breaker import ServiceBreaker
breaker = ServiceBreaker(sys.argv[2], 2, 60, redis.Redis.from_url(sys.argv[1]))
for _ in range(2):
    try:
        breaker.call(urllib.request.urlopen, sys.argv[3], timeout=5)
    except OSError as exc:
        print("failed:", type(exc).__name__, flush=True)
print("state:", breaker.state, flush=True)
"""


def test_a_breaker_opened_by_another_process_refuses_here(redis_url, failing):
    service = f"test service {failing.url}"
    done = subprocess.run([sys.executable, "-c", SECOND_PROCESS, redis_url, service, failing.url + "/"],
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.splitlines() == ["failed: HTTPError", "failed: HTTPError", "state: open"], done.stderr
    assert failing.requests == 2
    here = ServiceBreaker(service, 2, 60, redis.Redis.from_url(redis_url))
    with pytest.raises(CircuitOpen):
        here.call(failing.call)
    assert failing.requests == 2


def test_without_redis_the_breaker_lives_in_the_process(failing):
    breakers = Breakers(None, 2, 60)
    service = f"test service {failing.url}"
    for _ in range(2):
        with pytest.raises(urllib.error.HTTPError):
            breakers(service).call(failing.call)
    with pytest.raises(CircuitOpen):
        Breakers(None, 2, 60)(service).call(failing.call)  # another caller in the process: the same breaker
    assert failing.requests == 2
    other = ServiceBreaker(service, 2, 60)  # a breaker of its own starts closed
    with pytest.raises(urllib.error.HTTPError):
        other.call(failing.call)
    assert failing.requests == 3


def test_a_redis_that_is_down_lets_every_call_through(failing):
    """The breakers' own state unreachable: the calls go through, as without a breaker."""
    dead = redis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=2, socket_timeout=2)
    breaker = ServiceBreaker(f"test service {failing.url}", 1, 60, dead)
    started = time.monotonic()
    for _ in range(3):
        with pytest.raises(urllib.error.HTTPError):
            breaker.call(failing.call)
    assert failing.requests == 3
    assert time.monotonic() - started < 10


def test_a_call_that_fails_otherwise_is_counted_too(redis_url):
    """A closed port (a service that is down, not answering): the refused connection counts."""
    url = f"http://127.0.0.1:{free_port()}/"
    [breaker, _] = shared(redis_url, f"test service {url}", failures=1)
    with pytest.raises(urllib.error.URLError):
        breaker.call(urllib.request.urlopen, url, timeout=2)
    with pytest.raises(CircuitOpen) as caught:
        breaker.call(urllib.request.urlopen, url, timeout=2)
    assert isinstance(caught.value, StoreUnavailable)  # what every caller of a store already catches
