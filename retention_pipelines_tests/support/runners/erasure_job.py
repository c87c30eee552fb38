"""The code location's erasure job executed in a process of its own, as a run's pod does, on the
DAGSTER_HOME instance, its stores from the RETENTION_* environment:

    python -m retention_pipelines_tests.support.runners.erasure_job run REQUEST_ID
    python -m retention_pipelines_tests.support.runners.erasure_job reexecute-from-failure RUN_ID

Prints one JSON line: the run's id and whether it succeeded.
"""

from __future__ import annotations

import json
import sys

import dagster as dg


def erasure_job() -> dg.JobDefinition:
    """What dg.reconstructable rebuilds in the process that executes the run: the job as the code
    location defines it."""
    from retention_pipelines.dagster_wiring.erasure_run import ERASURE_JOB
    from retention_pipelines.definitions import defs

    return defs.resolve_job_def(ERASURE_JOB)


def main() -> int:
    # Imported by its module's name, not as __main__: the name the executing process rebuilds it by.
    from retention_pipelines_tests.support.runners.erasure_job import erasure_job

    command, argument = sys.argv[1:3]
    with dg.DagsterInstance.get() as instance:
        if command == "run":
            result = dg.execute_job(dg.reconstructable(erasure_job), instance, tags={"dagster/partition": argument})
        else:
            # With the failed run's tags, its partition among them, as the webserver's re-execution gives them.
            parent = instance.get_run_by_id(argument)
            result = dg.execute_job(dg.reconstructable(erasure_job), instance,
                                    tags={k: v for k, v in parent.tags.items() if k != "dagster/failure_reason"},
                                    reexecution_options=dg.ReexecutionOptions.from_failure(argument, instance))
    sys.stdout.write(json.dumps({"run_id": result.run_id, "success": result.success}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
