"""A `retention run` killed outright leaves its domain's pool slot taken and its run STARTED; the
next `retention run` of the domain marks that run failed, takes the slot and finishes the job, each
row deleted and audited once. A slot held by a live process, or by a run of another host, stays."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import dagster as dg

from retention_pipelines.cli.slots import HOST_TAG, PID_TAG, release_slots_of_dead_runs
from retention_pipelines.dagster_wiring.common import domain_pool
from retention_pipelines_tests.support.app_rows import audit_entries, bulk_insert_pg, remaining_ids
from retention_pipelines_tests.support.cli import RETENTION_SCRIPT

POOL = domain_pool("quiz_responses")


def slot_holders(instance: dg.DagsterInstance) -> set[str]:
    return {slot.run_id for slot in instance.event_log_storage.get_concurrency_info(POOL).claimed_slots}


def test_a_killed_run_does_not_keep_the_next_one_waiting(cli_env):
    bulk_insert_pg(cli_env, 30_000, "30 hours")
    first = subprocess.Popen([str(RETENTION_SCRIPT), "run", "quiz_responses"], env=dict(os.environ),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        with dg.DagsterInstance.get() as instance:
            while time.monotonic() < deadline and not slot_holders(instance):  # its step has started
                assert first.poll() is None, "the run ended before it could be killed"
                time.sleep(0.02)
        os.killpg(first.pid, signal.SIGKILL)
    finally:
        first.wait(30)
    with dg.DagsterInstance.get() as instance:
        [killed] = slot_holders(instance)
        assert instance.get_run_by_id(killed).status == dg.DagsterRunStatus.STARTED
    assert remaining_ids(cli_env), "the kill came too late to leave work"

    again = subprocess.run([str(RETENTION_SCRIPT), "run", "quiz_responses"], env=dict(os.environ),
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert remaining_ids(cli_env) == set()
    deleted = [entry["record_id"] for entry in audit_entries(cli_env) if entry["action"] == "deleted"]
    assert len(deleted) == len(set(deleted)) == 30_000  # each row once, across both runs
    with dg.DagsterInstance.get() as instance:
        assert instance.get_run_by_id(killed).status == dg.DagsterRunStatus.FAILURE
        assert slot_holders(instance) == set()


def test_only_slots_of_runs_that_cannot_free_them_are_released(tmp_path):
    from retention_pipelines_tests.support.cli import dagster_home

    with dg.DagsterInstance.from_config(str(dagster_home(tmp_path / "home"))) as instance:
        storage = instance.event_log_storage
        job = dg.GraphDefinition("noop").to_job()
        runs = {
            "live here": {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())},
            "dead here": {HOST_TAG: socket.gethostname(), PID_TAG: "999999999"},
            "elsewhere": {HOST_TAG: "another-host", PID_TAG: "999999999"},
            "ended": {},
        }
        ids = {}
        for name, tags in runs.items():
            run = instance.create_run_for_job(job, tags=tags, status=dg.DagsterRunStatus.STARTED)
            ids[name] = run.run_id
            storage.initialize_concurrency_limit_to_default(POOL)
            storage.set_concurrency_slots(POOL, 4)
            assert storage.claim_concurrency_slot(POOL, run.run_id, "step").is_claimed
        instance.report_run_failed(instance.get_run_by_id(ids["ended"]))

        released = release_slots_of_dead_runs(instance, POOL)

        assert sorted(released) == sorted([ids["dead here"], ids["ended"]])
        assert slot_holders(instance) == {ids["live here"], ids["elsewhere"]}
        assert instance.get_run_by_id(ids["dead here"]).status == dg.DagsterRunStatus.FAILURE
        assert instance.get_run_by_id(ids["live here"]).status == dg.DagsterRunStatus.STARTED
