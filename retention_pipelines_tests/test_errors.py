"""The one line an error is shown by: a driver's own words, never personal data."""

from __future__ import annotations

import sqlalchemy as sa

from retention_pipelines.errors import first_line


class DriverError(Exception):
    pass


def test_a_database_error_is_shown_by_the_first_line_the_driver_said_redacted():
    said = DriverError('duplicate key value violates unique constraint "email_key"\n'
                       "DETAIL:  Key (email)=(ann@example.org) already exists.")
    wrapped = sa.exc.IntegrityError("INSERT INTO email_blacklist …", {}, said)
    assert first_line(wrapped) == 'duplicate key value violates unique constraint "email_key"'
    said = DriverError('connection to server at "db" failed: FATAL: password authentication failed for '
                       'user "ann@example.org"\n')
    line = first_line(sa.exc.OperationalError("SELECT 1", {}, said))
    assert line.startswith('connection to server at "db" failed') and "<redacted e-mail>" in line
    assert "ann@example.org" not in line


def test_any_other_error_is_shown_by_its_own_first_line_or_its_type_when_it_says_nothing():
    assert first_line(OSError("bucket gone\nretry later")) == "bucket gone"
    assert first_line(ConnectionError("  ")) == "ConnectionError"
    assert first_line(ValueError("postgresql://ann:s3cret@db/app refused")) == "postgresql://db/app refused"
