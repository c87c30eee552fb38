"""The retention algorithm for any policy: plain Python and SQLAlchemy Core, no Dagster."""

from retention_pipelines.engine.retention.run import (
    Acted,
    Archived,
    ArchiveVerificationFailed,
    Audited,
    Found,
    Orphans,
    RetentionEngine,
    RunReport,
)

__all__ = ["Acted", "ArchiveVerificationFailed", "Archived", "Audited", "Found", "Orphans", "RetentionEngine",
           "RunReport"]
