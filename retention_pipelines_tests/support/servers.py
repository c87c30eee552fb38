"""Real servers on loopback for the tests and benchmarks: PostgreSQL, Redis, moto's S3.

Each is started from its binary in a temporary folder and stopped at the end. A server that
cannot start raises ServerFailed with its log: a real-service test never silently skips.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path

PG_BIN_DIRS = [Path("/usr/lib/postgresql") / v / "bin" for v in ("17", "16", "15", "14", "13")]


class ServerFailed(RuntimeError):
    pass


# A port is free when it is picked, and taken by its server a moment later (after initdb, for
# PostgreSQL); a fault test stops a server and starts it again on the same port; other tests count
# on nothing listening on a port they picked. Meanwhile another test process (the other pytest-xdist
# worker, a suite running beside this one) must not be handed the same port: each port picked stays
# reserved until its process ends, by a lock on its byte of one file that every test process shares
# (fcntl's record locks, which the kernel drops when the process ends, however it ends).
_RESERVATIONS = Path(tempfile.gettempdir()) / f"retention-test-ports-{os.getuid()}.lock"
_reservations = None  # the file, open for the life of the process: closing it would drop every lock
_reserved: set[int] = set()  # the ports this process picked (its own locks never conflict with each other)


def free_port() -> int:
    global _reservations
    if _reservations is None:
        _reservations = open(_RESERVATIONS, "ab")
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port in _reserved:
            continue
        try:
            fcntl.lockf(_reservations, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, port)
        except OSError:  # reserved by another test process
            continue
        _reserved.add(port)
        return port


def _wait_for_port(port: int, what: str, process: subprocess.Popen | None, log: Path, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            break
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    text = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
    raise ServerFailed(f"{what} did not start on port {port}:\n{text}")


def _pg_bin(name: str) -> str:
    for folder in PG_BIN_DIRS:
        if (folder / name).exists():
            return str(folder / name)
    found = shutil.which(name)
    if not found:
        raise ServerFailed(f"PostgreSQL's {name} is not installed: apt-get install -y postgresql")
    return found


def _as_postgres(args: list[str]) -> list[str]:
    # initdb refuses to run as root: the server runs as the postgres system user.
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


class PostgresServer:
    def __init__(self, settings: dict[str, str] | None = None):
        self.settings = settings or {}
        self.folder = Path(tempfile.mkdtemp(prefix="retention-pg-"))
        self.data = self.folder / "data"
        self.log = self.folder / "server.log"
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def start(self) -> PostgresServer:
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        result = subprocess.run(_as_postgres([_pg_bin("initdb"), "-D", str(self.data), "-U", "postgres",
                                              "--auth=trust", "-E", "UTF8", "--no-sync"]),
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise ServerFailed(f"initdb failed:\n{result.stdout}\n{result.stderr}")
        options = {"listen_addresses": "127.0.0.1", "port": str(self.port), "unix_socket_directories": str(self.folder),
                   "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off", **self.settings}
        self._args = [_pg_bin("postgres"), "-D", str(self.data)]
        for key, value in options.items():
            self._args += ["-c", f"{key}={value}"]
        self._launch("w")
        return self

    def _launch(self, mode: str) -> None:
        log = open(self.log, mode)
        if os.geteuid() == 0:
            shutil.chown(self.log, "postgres", "postgres")
        self.process = subprocess.Popen(_as_postgres(self._args), stdout=log, stderr=subprocess.STDOUT)
        _wait_for_port(self.port, "PostgreSQL", self.process, self.log)
        self._wait_ready()

    def stop_fast(self) -> None:
        """Stop the server as an operator's `pg_ctl stop -m fast` does: open sessions are cut off
        at once, their transactions rolled back; the data folder stays for `start_again`."""
        result = subprocess.run(_as_postgres([_pg_bin("pg_ctl"), "stop", "-m", "fast", "-w", "-D", str(self.data)]),
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise ServerFailed(f"pg_ctl stop failed:\n{result.stdout}\n{result.stderr}")
        self.process.wait(30)

    def start_again(self) -> None:
        """The stopped server started again on the same data folder and port."""
        self._launch("a")

    def _wait_ready(self) -> None:
        import psycopg2

        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg2.connect(self.dsn("postgres")).close()
                return
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise ServerFailed(f"PostgreSQL does not accept connections:\n{self.log.read_text()[-2000:]}")
                time.sleep(0.1)

    def dsn(self, database: str) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={database}"

    def url(self, database: str) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg2

        connection = psycopg2.connect(self.dsn("postgres"))
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')
            cursor.execute(f'CREATE DATABASE "{name}"')
        connection.close()
        return self.url(name)

    def create_app_database(self, name: str) -> str:
        """A database with the app's tables (our copy of its schema) and the retention tables."""
        from retention_pipelines import schema
        from retention_pipelines.demo import create_app_tables
        from retention_pipelines.stores import AppDatabase

        database = AppDatabase(self.create_database(name))
        try:
            create_app_tables(database)
            schema.upgrade(database.engine)
        finally:
            database.dispose()
        return self.url(name)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            # The "fast" shutdown (pg_ctl, as the server's own user: the process here is runuser's):
            # the smart one waits for every client to leave, and a test's engine left in a pool kept
            # the suite waiting 20 s per server at its end.
            subprocess.run(_as_postgres([_pg_bin("pg_ctl"), "stop", "-m", "fast", "-w", "-D", str(self.data)]),
                           capture_output=True, text=True, timeout=60)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


class LoopbackServer:
    """A server started from one command on a free loopback port, its output in a log file."""

    name = "server"

    def __init__(self):
        self.folder = Path(tempfile.mkdtemp(prefix=f"retention-{self.name.split()[0].lower()}-"))
        self.port = free_port()
        self.log = self.folder / "server.log"
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self):
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        _wait_for_port(self.port, self.name, self.process, self.log)
        return self

    def stop(self) -> None:
        self.stop_process()
        shutil.rmtree(self.folder, ignore_errors=True)

    def stop_process(self) -> None:
        """The server stopped, its folder kept, so that `start` can run it again on the same port."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def _installed(binary: str, package: str) -> str:
    found = shutil.which(binary)
    if not found:
        raise ServerFailed(f"{binary} is not installed: apt-get install -y {package}")
    return found


class RedisServer(LoopbackServer):
    name = "Redis"

    def command(self) -> list[str]:
        return [_installed("redis-server", "redis-server"), "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.folder)]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


class MotoS3Server(LoopbackServer):
    """moto in server mode: a real HTTP S3 endpoint on loopback (needs the moto[server] extra)."""

    name = "moto S3 server"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class PushgatewayServer(LoopbackServer):
    """Prometheus Pushgateway (Debian's prometheus-pushgateway) on loopback."""

    name = "Pushgateway"

    def command(self) -> list[str]:
        return [_installed("prometheus-pushgateway", "prometheus-pushgateway"),
                f"--web.listen-address=127.0.0.1:{self.port}"]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def serve_in_a_thread(handler: type) -> ThreadingHTTPServer:
    """An HTTP server on a free loopback port answering with `handler`, in a daemon thread of this
    process (stop it with its shutdown())."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
