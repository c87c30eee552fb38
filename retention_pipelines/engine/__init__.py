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
from retention_pipelines.engine.retention.selection import DUE, Selection, SubjectRows

__all__ = ["DUE", "Acted", "ArchiveVerificationFailed", "Archived", "Audited", "Found", "Orphans", "RetentionEngine",
           "RunReport", "Selection", "SubjectRows"]
