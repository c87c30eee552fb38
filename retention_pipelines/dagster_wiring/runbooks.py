"""Where each check's runbook is: what a failure means and what to do, shown beside the check."""

import dagster as dg

RUNBOOKS = "docs/runbooks"
RUNBOOK_METADATA_KEY = "runbook"


def runbook(page: str) -> dict[str, dg.MetadataValue]:
    """A check's metadata naming its runbook: `page` is a file of docs/runbooks, with its section's
    anchor where the page covers more than the one check."""
    return {RUNBOOK_METADATA_KEY: dg.MetadataValue.path(f"{RUNBOOKS}/{page}")}
