"""Daemon.stop (support/dagster_deployment.py) signals the daemon's process group only while that
group is the daemon's: with two pytest-xdist workers, the number of a group that is gone soon names
another test's process, which a late stop must leave alone."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from retention_pipelines_tests.support.dagster_deployment import Daemon


def test_a_stop_after_the_daemon_is_gone_spares_a_group_that_took_its_number(tmp_path):
    # Another test's server in a group of its own, and a daemon that ended and was reaped, whose pid
    # the kernel has since handed to that server (played here by giving the daemon the server's pid).
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        daemon = Daemon({}, tmp_path / "daemon.log")
        daemon.process = subprocess.Popen(["true"])
        daemon.process.wait()
        daemon.process.pid = other.pid
        daemon.stop()
        with pytest.raises(subprocess.TimeoutExpired):  # a second later it still runs: no signal reached it
            other.wait(1)
    finally:
        other.kill()
        other.wait()


def living(group: int) -> list[int]:
    """The processes of a group that still run (an orphan's zombie waits for init to reap it)."""
    found = subprocess.run(["pgrep", "-g", str(group)], capture_output=True, text=True).stdout.split()
    states = {}
    for pid in found:
        try:
            states[int(pid)] = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            pass
    return [pid for pid, state in states.items() if state != "Z"]


def test_a_stop_ends_the_daemon_and_what_it_started(tmp_path):
    daemon = Daemon({}, tmp_path / "daemon.log")
    daemon.process = subprocess.Popen(["sh", "-c", "sleep 60 & sleep 60"], start_new_session=True)
    group = daemon.process.pid
    try:
        deadline = time.monotonic() + 10
        while len(living(group)) < 3 and time.monotonic() < deadline:  # the shell and its two sleeps
            time.sleep(0.05)
        assert len(living(group)) == 3, living(group)
        daemon.stop()
        assert not daemon.alive()
        deadline = time.monotonic() + 10
        while living(group) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert living(group) == []
    finally:
        if daemon.alive():
            daemon.process.kill()
