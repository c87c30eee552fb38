"""Engine runs in processes of their own (the modules beside this one), started and watched by a test."""

from __future__ import annotations

from retention_pipelines.stores import AppDatabase
from retention_pipelines_tests.support.repository import REPOSITORY


class RunnerProcess:
    """retention_run.py (or another MODULE of the same kind) in a subprocess; its JSON events are collected
    by a thread as they come."""

    MODULE = "retention_pipelines_tests.support.runners.retention_run"

    def __init__(self, **config):
        import json
        import queue
        import subprocess
        import sys
        import threading

        self.events: queue.Queue = queue.Queue()
        self.seen: list[dict] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.MODULE, json.dumps(config)],
            cwd=REPOSITORY, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )

        def read() -> None:
            for line in self.process.stdout:
                try:
                    self.events.put(json.loads(line))
                except ValueError:
                    self.events.put({"event": "output", "line": line})

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()

    def wait_for(self, name: str, timeout: float = 60.0) -> dict:
        import queue
        import time

        deadline = time.monotonic() + timeout
        for event in self.seen:
            if event.get("event") == name:
                return event
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"runner gave no {name!r} event in {timeout}s; seen {self.seen}; "
                                     f"stderr: {self.stderr_tail()}")
            try:
                event = self.events.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                if self.process.poll() is not None and self.events.empty():
                    self._reader.join(2)
                    if self.events.empty():
                        raise AssertionError(f"runner exited ({self.process.returncode}) without {name!r}; "
                                             f"seen {self.seen}; stderr: {self.stderr_tail()}") from None
                continue
            self.seen.append(event)
            if event.get("event") == name:
                return event

    def has_seen(self, name: str) -> bool:
        import queue

        while True:
            try:
                self.seen.append(self.events.get_nowait())
            except queue.Empty:
                break
        return any(e.get("event") == name for e in self.seen)

    def go(self) -> None:
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def kill(self) -> None:
        import signal

        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def finish(self, timeout: float = 120.0) -> int:
        self.process.wait(timeout)
        return self.process.returncode

    def stderr_tail(self) -> str:
        if self.process.poll() is None:
            return "(still running)"
        return (self.process.stderr.read() or "")[-3000:]

    def close(self) -> None:
        if self.process.poll() is None:
            self.kill()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            try:
                stream.close()
            except Exception:
                pass


def backend_gone(database: AppDatabase, application_name: str) -> None:
    """A killed client's backend notices and rolls back its transaction; wait until it is gone."""
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with database.engine.connect() as connection:
            if not connection.exec_driver_sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = %(n)s",
                                              {"n": application_name}).scalar_one():
                return
        time.sleep(0.02)
    raise AssertionError(f"the killed run's backend ({application_name}) is still there after 30 s")
