"""The errors every layer raises and catches: the stores raise them, the engine, the Dagster
wiring and the command line catch them. They sit below all of those (and below the logging
setup), so that catching one never means importing the layer that raises it."""

from __future__ import annotations

from retention_pipelines.redaction import without_personal_data


class StoreUnavailable(Exception):
    """A production part (database, archive store, lock service) cannot be reached or used.

    Its message often quotes what a driver or a server said, which may quote a connection string
    or a row: it is redacted here, so that every store's error is safe to show wherever it goes."""

    def __init__(self, message: str):
        super().__init__(without_personal_data(message))


class PolicyMismatch(Exception):
    """A policy names a table or column that the database does not have, or one it cannot use as
    it is (a type, a clock without a declared zone or meaning of NULL); one line per problem."""


class KeyOutsideStore(StoreUnavailable):
    """A key that does not name a file inside a local store's folder; nothing was touched."""


class DomainLocked(Exception):
    """Another run holds this domain's lock."""


class LockLost(Exception):
    """The lock expired or was taken over while this run held it: stop before deleting anything more."""


class ConfigurationError(ValueError):
    """A RETENTION_* variable that cannot be used; the message names it, never its value."""


def first_line(exc: BaseException) -> str:
    """What an error said, in one line fit to show: a driver's own words (a DBAPIError's `orig`)
    rather than SQLAlchemy's wrapping of them, else the exception's; its type's name when it says
    nothing. Drivers quote the rows and the connection they were given: the line is redacted."""
    said = str(getattr(exc, "orig", None) or exc).strip()
    return without_personal_data(said.splitlines()[0] if said else type(exc).__name__)
