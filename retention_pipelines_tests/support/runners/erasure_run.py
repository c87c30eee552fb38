"""One erasure run (every domain, then the key and the request) in its own process, for the kill tests.

    python -m retention_pipelines_tests.support.runners.erasure_run '<json config>'

Prints one JSON line per event on stdout: ready, "erased <domain>" (after each domain), completing, completed.
With "pause_after" (a domain) it waits for a line on stdin after that domain; with
"pause_before_complete", before the outcome's transaction.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def emit(**event) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def main() -> int:
    config = json.loads(sys.argv[1])
    from retention_pipelines.stores import AppDatabase
    from retention_pipelines_tests.support.erasure_rows import DOMAINS, Erasure

    erasure = Erasure(AppDatabase(config["database_url"]), Path(config["folder"]), batch_size=config.get("batch_size"))
    request_id, run_id = config["request_id"], config["run_id"]
    engines = {domain: erasure.engine(domain) for domain in DOMAINS}
    emit(event="ready")
    parts = []
    for domain in DOMAINS:
        parts.append(erasure.subject_erasure.erase_domain(engines[domain], request_id, run_id))
        emit(event=f"erased {domain}", rows=parts[-1].erased)
        if config.get("pause_after") == domain:
            sys.stdin.readline()
    emit(event="completing")
    if config.get("pause_before_complete"):
        sys.stdin.readline()
    outcome = erasure.subject_erasure.complete(request_id, parts, run_id)
    emit(event="completed", status=outcome.status, keys_destroyed=outcome.keys_destroyed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
