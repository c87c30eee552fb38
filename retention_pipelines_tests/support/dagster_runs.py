"""A Dagster run as the tests read it back: its steps' output metadata (where a dry run reports),
its failures' messages, and what it left in the instance's asset history."""

from __future__ import annotations

import dagster as dg


def output_metadata(result: dg.ExecuteInProcessResult) -> dict:
    """The metadata of the run's step outputs, values only."""
    return {k: v.value for e in result.all_events if e.event_type_value == "STEP_OUTPUT"
            for k, v in e.step_output_data.metadata.items()}


def failure_messages(result: dg.ExecuteInProcessResult) -> str:
    return " ".join(e.step_failure_data.user_failure_data.description for e in result.all_events
                    if e.event_type_value == "STEP_FAILURE" and e.step_failure_data.user_failure_data)


def asset_history(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """The run's events that concern an asset or a check, as stored (materializations, planned ones,
    failures to materialize, check evaluations): none for a run that leaves the assets' history as it was."""
    return [record.dagster_event.event_type_value for record in instance.all_logs(run_id)
            if record.dagster_event and (record.dagster_event.asset_key
                                         or record.dagster_event.event_type_value.startswith("ASSET_CHECK"))]
