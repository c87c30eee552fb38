"""A real Dagster deployment for integration tests: an instance on PostgreSQL, the `dagster` CLI
and `dagster-daemon run` as subprocesses, on the repository's own workspace.yaml.

Nothing here is mocked; whatever cannot start raises with its output, so a test fails loudly.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import yaml

from retention_pipelines_tests.support.repository import REPOSITORY
from retention_pipelines_tests.support.servers import PostgresServer

WORKSPACE = REPOSITORY / "workspace.yaml"
PRODUCTION_DAGSTER_YAML = REPOSITORY / "deploy" / "dagster.yaml"
DOMAIN_TAG_LIMIT = {"key": "retention/domain", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
SENSOR_INTERVAL_SECONDS = 5
BLOB_PREFIX = "pdfs"


def script(name: str) -> str:
    """A console script of the interpreter running the tests (the venv's), else one on PATH."""
    beside = Path(sys.executable).with_name(name)
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} is not installed next to {sys.executable} nor on PATH")
    return found


def write_dagster_home(folder: Path, server: PostgresServer, storage_database: str) -> tuple[Path, dict[str, str]]:
    """DAGSTER_HOME with the production instance settings exactly as shipped (deploy/dagster.yaml:
    PostgreSQL storage, compute logs in S3, the queued run coordinator with one run per
    retention/domain, the app_database pool, run monitoring and retries), and the variables that
    point its storage at a database of its own on `server` and its compute logs at a new bucket of
    the S3 server that AWS_ENDPOINT_URL names (the s3_env fixture)."""
    if not os.environ.get("AWS_ENDPOINT_URL"):
        raise AssertionError("AWS_ENDPOINT_URL is not set: the production instance keeps compute logs in S3, "
                             "use the s3_env fixture")
    import boto3

    compute_log_bucket = f"compute-logs-{uuid.uuid4().hex[:10]}"
    boto3.client("s3").create_bucket(Bucket=compute_log_bucket)
    server.create_database(storage_database)
    config = yaml.safe_load(PRODUCTION_DAGSTER_YAML.read_text())
    limits = config["concurrency"]["runs"]["tag_concurrency_limits"]
    if DOMAIN_TAG_LIMIT not in limits:
        raise AssertionError(f"{PRODUCTION_DAGSTER_YAML} no longer limits runs to one per retention/domain: {limits}")
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(PRODUCTION_DAGSTER_YAML, folder / "dagster.yaml")
    # The test server trusts loopback connections: any password is accepted.
    return folder, {"DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(server.port),
                    "DAGSTER_PG_DB": storage_database, "DAGSTER_PG_USERNAME": "postgres",
                    "DAGSTER_PG_PASSWORD": "trusted-on-loopback", "DAGSTER_COMPUTE_LOG_BUCKET": compute_log_bucket}


def daemon_env(tmp_path: Path, dagster_home: Path, app_url: str, redis_url: str, archive_url: str,
               blob_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETENTION_") and k != "DAGSTER_HOME"}
    env.update({
        "DAGSTER_HOME": str(dagster_home),
        "RETENTION_HOME": str(tmp_path / "retention_home"),
        "RETENTION_DATABASE_URL": app_url,
        "RETENTION_REDIS_URL": redis_url,
        "RETENTION_ARCHIVE_URL": archive_url,
        "RETENTION_BLOB_URL": blob_url,
        # A production deployment (RETENTION_ENV unset): every store and key named, none from RETENTION_HOME.
        "RETENTION_ARCHIVE_MASTER_KEY": "5a" * 32,
        "RETENTION_ERASURE_HASH_KEY": "hash-key-of-the-daemon-test",
        "RETENTION_LAG_SENSOR_INTERVAL_SECONDS": str(SENSOR_INTERVAL_SECONDS),
    })
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL"):
        assert env.get(key), f"{key} is not set: the s3_env fixture points boto3 at moto"
    return env


def dagster(env: dict[str, str], *args: str, timeout: float = 180) -> str:
    """`dagster <args> -w <repository>/workspace.yaml`, from the repository root (the workspace's
    `working_directory: .` is relative to the current directory); its stdout, or an error with all
    it printed."""
    command = [script("dagster"), *args, "-w", str(WORKSPACE)]
    result = subprocess.run(command, cwd=REPOSITORY, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def dg(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """`dg <args>`, Dagster's project CLI, from the repository root (pyproject's [tool.dg] makes it a
    dg project); whatever it exits with. VIRTUAL_ENV names the venv running it, the project's, which
    dg otherwise warns is not the active one."""
    return subprocess.run([script("dg"), *args], cwd=REPOSITORY, env={**env, "VIRTUAL_ENV": sys.prefix},
                          capture_output=True, text=True, timeout=timeout)


def instigator_states(env: dict[str, str], kind: str) -> dict[str, str]:
    """{name: RUNNING|STOPPED} from `dagster schedule list` or `dagster sensor list`."""
    states = {}
    for line in dagster(env, kind, "list").splitlines():
        prefix = f"{kind.capitalize()}: "
        if line.startswith(prefix):
            name, _, state = line.removeprefix(prefix).partition(" ")
            states[name] = state.strip("[]")
    if not states:
        raise AssertionError(f"`dagster {kind} list` listed no {kind}s")
    return states


class Daemon:
    """`dagster-daemon run` in a process group of its own (its code server and the run workers
    it launches are in the same group), its output in a log file."""

    def __init__(self, env: dict[str, str], log: Path):
        self.env, self.log = env, log
        self.process: subprocess.Popen | None = None

    def start(self) -> Daemon:
        with open(self.log, "w") as output:
            self.process = subprocess.Popen([script("dagster-daemon"), "run", "-w", str(WORKSPACE)], cwd=REPOSITORY,
                                            env=self.env, stdout=output, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def tail(self, characters: int = 6000) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else "(no log)"
        return text[-characters:]

    def stop(self) -> None:
        if self.process is None:
            return
        self._signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self.process.wait(10)
        # Whatever of the group outlived the daemon (a code server, a run worker) goes too.
        self._signal(signal.SIGKILL)

    def _signal(self, which: signal.Signals) -> None:
        """The daemon's process group (start_new_session: its id is the daemon's pid) while that id is
        still its group's. The kernel keeps the number while any process of the group lives, and hands
        it out again once the daemon is reaped and its group empty (pid_max is 32,768 here, gone through
        in minutes while two workers start processes): a process with the daemon's pid after the daemon
        was reaped is someone else's, another test's server perhaps, and gets no signal."""
        group = self.process.pid
        if self.process.returncode is not None and Path(f"/proc/{group}").exists():
            return
        try:
            os.killpg(group, which)
        except (ProcessLookupError, PermissionError):
            pass


class CodeServer(Daemon):
    """`dagster code-server start` on a loopback port, as the production code-location service
    runs it (deploy/workspace.yaml reaches it at DAGSTER_CODE_HOST:DAGSTER_CODE_PORT)."""

    def __init__(self, env: dict[str, str], log: Path, port: int):
        super().__init__(env, log)
        self.port = port

    def start(self) -> CodeServer:
        with open(self.log, "w") as output:
            self.process = subprocess.Popen(
                [script("dagster"), "code-server", "start", "-h", "127.0.0.1", "-p", str(self.port),
                 "-m", "retention_pipelines.definitions", "--location-name", "retention_pipelines"],
                cwd=REPOSITORY, env=self.env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def wait_ready(self, seconds: float = 120) -> None:
        """Until the server answers a ping (it does also when the code failed to load, to report why)."""
        import time

        from dagster._grpc.client import DagsterGrpcClient

        client = DagsterGrpcClient(port=self.port, host="127.0.0.1")
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if not self.alive():
                raise AssertionError(f"dagster code-server exited:\n{self.tail()}")
            try:
                client.ping("ready?")
                return
            except Exception:  # noqa: BLE001 - any gRPC error means not up yet
                time.sleep(0.5)
        raise AssertionError(f"dagster code-server did not answer in {seconds:g} s:\n{self.tail()}")


class Webserver(Daemon):
    """`dagster-webserver` on a free loopback port, in a process group of its own like the daemon;
    on the repository's workspace unless told another."""

    def __init__(self, env: dict[str, str], log: Path, port: int, workspace: Path = WORKSPACE):
        super().__init__(env, log)
        self.port, self.workspace = port, workspace

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Webserver:
        with open(self.log, "w") as output:
            self.process = subprocess.Popen(
                [script("dagster-webserver"), "-h", "127.0.0.1", "-p", str(self.port), "-w", str(self.workspace)],
                cwd=REPOSITORY, env=self.env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def wait_ready(self, seconds: float = 180) -> None:
        """Until the webserver answers and has loaded the code location; raises with its log if not."""
        self.loaded_locations(seconds)

    def loaded_locations(self, seconds: float = 180) -> list[dict]:
        """The workspace's location entries once every one has finished loading, each with the
        error it failed with (`locationOrLoadError`: a PythonError's message and its causes'), as the
        UI shows them."""
        import json
        import time
        import urllib.request

        deadline = time.monotonic() + seconds
        query = json.dumps({"query": "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
                                     "locationOrLoadError { __typename ... on PythonError "
                                     "{ message causes { message } } } } } } }"})
        while time.monotonic() < deadline:
            if not self.alive():
                raise AssertionError(f"dagster-webserver exited:\n{self.tail()}")
            try:
                request = urllib.request.Request(f"{self.url}/graphql", data=query.encode(),
                                                 headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=5) as response:
                    entries = json.load(response)["data"]["workspaceOrError"]["locationEntries"]
                if entries and all(entry["loadStatus"] == "LOADED" for entry in entries):
                    return entries
            except OSError:
                pass
            time.sleep(1)
        raise AssertionError(f"dagster-webserver did not load the code location in {seconds:g} s:\n{self.tail()}")

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        import json
        import urllib.error
        import urllib.request

        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                answer = json.load(response)
        except urllib.error.HTTPError as error:  # the webserver answers a GraphQL error with 500: say which
            raise AssertionError(f"GraphQL {error.code}: {error.read().decode(errors='replace')[:3000]}\n"
                                 f"{self.tail()}") from None
        if answer.get("errors"):
            raise AssertionError(f"GraphQL errors: {answer['errors']}")
        return answer["data"]


def wait_for_run(instance, run_id: str, daemon: Daemon, seconds: float = 300):
    """The run once it has finished; raises naming the daemon's last words if it has not in `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        run = instance.get_run_by_id(run_id)
        if run is not None and run.is_finished:
            return run
        if not daemon.alive():
            raise AssertionError(f"dagster-daemon exited:\n{daemon.tail()}")
        time.sleep(2)
    raise AssertionError(f"run {run_id} did not finish in {seconds:g} s\n{daemon.tail()}")


REPOSITORY_SELECTOR = {"repositoryLocationName": "retention_pipelines", "repositoryName": "__repository__"}
LAUNCH_RUN = """
mutation Launch($params: ExecutionParams!) {
  launchPipelineExecution(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
  }
}"""


def launch_job(webserver: Webserver, job: str, partition: str) -> str:
    """Launch `job` for `partition` as the launchpad does (GraphQL, into the instance's run queue); its run id."""
    launched = webserver.graphql(LAUNCH_RUN, {"params": {
        "selector": {**REPOSITORY_SELECTOR, "jobName": job},
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": partition}]},
    }})["launchPipelineExecution"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    return launched["run"]["runId"]


LAUNCH_BACKFILL = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
  }
}"""


def wait_for_backfill_runs(instance, backfill_id: str, count: int, daemon: Daemon, seconds: float = 420) -> list:
    """The backfill's runs once there are `count` of them and all have finished."""
    import dagster as dg

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        runs = instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
        if len(runs) == count and all(run.is_finished for run in runs):
            return runs
        if not daemon.alive():
            raise AssertionError(f"dagster-daemon exited:\n{daemon.tail()}")
        time.sleep(2)
    raise AssertionError(f"the backfill's {count} runs did not finish in {seconds:g} s; runs: "
                         f"{[(r.run_id[:8], r.status) for r in runs]}\n{daemon.tail()}")


PARTITION_STATUSES = """
query Statuses($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode { assetPartitionStatuses {
      __typename
      ... on TimePartitionStatuses { ranges { startKey endKey status } }
    } }
  }
}"""


def partition_statuses(webserver: Webserver, asset_key, keys: list[str]) -> dict[str, str]:
    """Each of `keys` (the asset's windows, in order) as the UI's partition page colours it:
    MATERIALIZED, FAILED, MATERIALIZING, or MISSING where no range holds it."""
    statuses = webserver.graphql(PARTITION_STATUSES, {"key": {"path": list(asset_key.path)}})
    ranges = statuses["assetNodeOrError"]["assetPartitionStatuses"]["ranges"]
    shown = dict.fromkeys(keys, "MISSING")
    for status in ranges:
        for key in keys[keys.index(status["startKey"]):keys.index(status["endKey"]) + 1]:
            shown[key] = status["status"]
    return shown
