"""The subject key (engine/identity/subjects.py): the expression an index on the subject column serves,
the same in SQL as in Python, and coarse enough that every spelling of a subject is among the rows
an erasure reads through it."""

from __future__ import annotations

import string
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retention_pipelines.demo import app_schema_sql
from retention_pipelines.engine.identity.subjects import (
    OTHER_KEY,
    SAMPLE_ADDRESS,
    Subject,
    create_index_statement,
    lookup,
    lookup_keys,
    normalise_address,
    subject_index,
    subject_key,
    subject_key_of,
    subject_rows,
)
from retention_pipelines.engine.retention.table import DomainTable
from retention_pipelines.stores import Dialect
from retention_pipelines_tests.support.erasure_rows import DOMAINS

# Addresses as people and apps write them: printable ASCII, and everything NFKC, the case fold or
# the trimming of invisible characters changes (fullwidth forms, ß, the Kelvin sign, ligatures,
# spaces of every kind, control and format characters), and anything else.
SPECIAL = ["ß", "ẞ", "\u212a", "ﬁ", "İ", "ı", "Σ", "ς", "\u00a0", "\u2003", "\u3000", "\u200b", "\ufeff",
           "\u200e", "\t", "\n", "\r", "\x7f", "\x01", "＠", "ＡＮＮ", "ｅ", "é", "e\u0301", "㏇"]
characters = st.one_of(st.sampled_from(string.printable), st.sampled_from([c for c in SPECIAL if len(c) == 1]),
                       st.characters(exclude_categories=("Cs",), exclude_characters="\x00"))
stored_addresses = st.lists(st.one_of(st.sampled_from(SPECIAL), st.text(characters, max_size=4)),
                            max_size=8).map("".join)
spellings = st.builds(
    lambda pre, local, domain, post, upper: (pre + (local.upper() if upper else local) + "@" + domain + post),
    st.text(st.sampled_from([" ", "\t", "\u00a0", "\u200b", "\ufeff"]), max_size=2),
    st.text(st.sampled_from(string.ascii_letters + string.digits + "._-ßẞﬁＡｅ\u212a"), min_size=1, max_size=8),
    st.sampled_from(["example.com", "EXAMPLE.org", "ｅxample.net", "exämple.de"]),
    st.text(st.sampled_from([" ", "\n", "\u3000", "\u2060"]), max_size=2), st.booleans())


@given(st.one_of(stored_addresses, spellings))
def test_every_spelling_of_a_subject_is_filed_under_one_of_the_keys_looked_up(stored):
    assert subject_key_of(stored) in lookup_keys(normalise_address(stored))


@given(st.text(st.sampled_from(string.printable[:95]), max_size=30))
def test_the_key_of_an_address_of_printable_ascii_is_its_normalised_form(stored):
    assert subject_key_of(stored) == normalise_address(stored)


def test_an_address_with_anything_else_shares_the_other_key():
    assert {subject_key_of(s) for s in ("Straße@x.de", "ann@x.org\t", "ＡＮＮ@x.org", "\u200bann@x.org")} == {OTHER_KEY}
    assert lookup_keys("ann@x.org") == (OTHER_KEY, "ann@x.org") and lookup_keys("strasse@x.de") == (
        OTHER_KEY, "strasse@x.de")
    assert lookup_keys("josé@x.org") == (OTHER_KEY,)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(addresses=st.lists(st.one_of(stored_addresses, spellings), min_size=1, max_size=20))
def test_the_database_computes_the_key_python_does_and_its_lookup_finds_every_spelling(any_database, policies,
                                                                                     addresses):
    """Rows of quiz_responses (its subject key's index in place) with the drawn addresses: the key the
    database computes of each is subject_key_of's, and the lookup of each address's subject finds
    exactly the rows whose address normalises to it."""
    table = DomainTable.of(policies.domains["quiz_responses"], any_database).table
    ids = [str(uuid.uuid4()) for _ in addresses]
    with any_database.begin() as connection:
        connection.execute(table.delete())
        connection.execute(sa.insert(table), [
            {"id": record, "session_id": str(uuid.uuid4()), "email": address, "answers": {},
             "created_at": any_database.bind_time(any_database.now())} for record, address in zip(ids, addresses)])
        keys = dict(connection.execute(sa.select(table.c.id, subject_key(table.c.email, any_database.dialect))).all())
    assert {str(k): v for k, v in keys.items()} == {record: subject_key_of(a) for record, a in zip(ids, addresses)}
    for address in addresses:
        subject = normalise_address(address)
        found = {str(row.pk) for row in subject_rows(any_database, table, table.c.id, table.c.email,
                                                     table.c.created_at, Subject(lambda s: True, subject))}
        wanted = {record for record, other in zip(ids, addresses) if normalise_address(other) == subject}
        assert wanted <= found  # what the lookup reads holds every spelling; the caller compares them
        assert found <= {record for record, other in zip(ids, addresses)
                         if subject_key_of(other) in lookup_keys(subject)}


# The index: used by the lookup's plan where it is there, and named where it is not -------------------
def test_the_shipped_schema_and_the_readme_create_the_index_on_the_expression_the_lookup_compares(policies):
    statements = {" ".join(statement.split()) for statement in app_schema_sql("postgresql")}
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    postgresql = Dialect.of(sa.create_mock_engine("postgresql://", executor=None))
    named = [policy for policy in policies.domains.values() if policy.subject_column]
    assert named
    for policy in named:
        wanted = create_index_statement(policy.table, policy.subject_column, postgresql)
        assert wanted in statements, policy.name
        assert wanted + ";" in readme, policy.name


@pytest.mark.parametrize("domain", DOMAINS)
def test_the_lookup_of_each_domain_reads_the_index_of_the_shipped_schema(pg_database, policies, domain):
    policy = policies.domains[domain]
    found = subject_index(pg_database, policy, DomainTable.of(policy, pg_database).table)
    assert found.checked and not found.missing
    assert found.index == f"{policy.table}_email_subject_key_idx"


def test_without_the_index_the_lookup_reads_none_and_the_statement_named_creates_it(pg_database, policies):
    policy = policies.domains["meal_plans"]
    table = DomainTable.of(policy, pg_database).table
    with pg_database.begin() as connection:
        connection.exec_driver_sql("DROP INDEX meal_plans_email_subject_key_idx")
        # An index on a near expression (no collation) serves no lookup: only the exact one counts.
        connection.exec_driver_sql("CREATE INDEX meal_plans_near_idx ON meal_plans ((CASE WHEN (email ~ '[^ -~]') "
                                   "THEN '' ELSE lower(trim(email)) END))")
    found = subject_index(pg_database, policy, table)
    assert found.missing and found.index is None
    assert found.create_index == ("CREATE INDEX meal_plans_email_subject_key_idx ON meal_plans ((CASE WHEN "
                                  "(email ~ '[^ -~]') THEN '' ELSE lower(trim(email) COLLATE \"C\") END))")
    with pg_database.begin() as connection:
        connection.exec_driver_sql(found.create_index)
    assert subject_index(pg_database, policy, table).index == "meal_plans_email_subject_key_idx"


def test_the_check_leaves_the_callers_transaction_as_it_was(pg_database, policies):
    policy = policies.domains["quiz_responses"]
    table = DomainTable.of(policy, pg_database).table
    with pg_database.connect() as connection:
        assert pg_database.dialect.indexes_read(connection, lookup(table.c.email, [table.c.id], SAMPLE_ADDRESS,
                                                                   pg_database.dialect), "quiz_responses")
        assert connection.exec_driver_sql("SHOW enable_seqscan").scalar_one() == "on"


def test_sqlite_is_not_checked_and_its_demo_tables_have_no_subject_key_index(sqlite_database, policies):
    policy = policies.domains["quiz_responses"]
    found = subject_index(sqlite_database, policy, DomainTable.of(policy, sqlite_database).table)
    assert not found.checked and not found.missing
    with sqlite_database.connect() as connection:
        indexes = connection.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'index'").scalars().all()
    assert "quiz_responses_email_idx" in indexes and not [name for name in indexes if "subject_key" in name]
