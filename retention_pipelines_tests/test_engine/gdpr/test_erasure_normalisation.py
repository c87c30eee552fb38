"""Who a subject is (engine/identity/subjects.py), the class of failure where an erasure ended `completed`
while rows of the person stayed because SQL and Python spelt the address differently.

One normalisation (NFKC, case fold, invisible characters trimmed at the ends) decides; the
property test writes the same person's address in Unicode spellings (case, fullwidth forms,
ligatures, ß and ẞ, the Kelvin sign, spaces and zero-width characters around it) into all four
domains beside near misses that are other people (a Turkish dotted İ, a zero-width space inside),
files the request in yet another spelling, runs the erasure on real PostgreSQL and checks that
exactly the person's rows went, that the request is completed exactly when nothing of them is
left, and that the blacklist gave up no entry before its deadline."""

from __future__ import annotations

import hashlib
import hmac
import string
import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retention_pipelines.engine.archive.keys import legacy_subject_hash, subject_hash
from retention_pipelines.engine.gdpr.requests import ErasureRefused, normalized
from retention_pipelines.engine.identity.subjects import normalise_address
from retention_pipelines.engine.oversight.queue import ManualQueue
from retention_pipelines.stores import AppDatabase
from retention_pipelines_tests.support.app_rows import _insert
from retention_pipelines_tests.support.databases import new_database
from retention_pipelines_tests.support.erasure_rows import DOMAINS, PDF, Erasure, place_hold, table_rows

KEY = b"normalisation-tests-hash-key-0123"
# Invisible at the ends of an address: whitespace of every kind, zero-width and direction marks.
INVISIBLE = [" ", "\t", "\n", "\r", "\u00a0", "\u2003", "\u3000", "\u200b", "\u200e", "\u2060", "\ufeff"]


# The function itself ------------------------------------------------------------------------------
@pytest.mark.parametrize("spelling", [
    "Joe@Example.com", "JOE@EXAMPLE.COM", " joe@example.com\t", "\u00a0joe@example.com\u2003",
    "\u3000joe@example.com\n", "\u200bjoe@example.com\ufeff", "\ufeff\u200e joe@example.com \u2060\r\n",
    "ｊｏｅ＠ｅｘａｍｐｌｅ．ｃｏｍ", "ＪＯＥ@example.COM", "joe@exampl\uff45.com",
])
def test_spellings_of_one_address_are_one(spelling):
    assert normalise_address(spelling) == "joe@example.com"


@pytest.mark.parametrize("spelling, canonical", [
    ("Straße@example.de", "strasse@example.de"), ("STRASSE@example.de", "strasse@example.de"),
    ("STRAẞE@example.de", "strasse@example.de"),  # the capital sharp s
    ("ﬁona@example.com", "fiona@example.com"), ("FIONA@example.com", "fiona@example.com"),  # the ligature
    ("\u212aarl@example.com", "karl@example.com"),  # the Kelvin sign
    ("ΣΊΣΥΦΟΣ@example.gr", "σίσυφοσ@example.gr"),  # final and medial sigma fold alike
])
def test_compatibility_forms_and_case_fold_to_one(spelling, canonical):
    assert normalise_address(spelling) == canonical


@pytest.mark.parametrize("one, other", [
    ("İnci@example.com.tr", "inci@example.com.tr"),  # the dotted capital I folds to i + a combining dot
    ("ann\u200b@example.com", "ann@example.com"),  # inside the address nothing is removed
    ("ann@example.com", "anne@example.com"),
])
def test_other_addresses_stay_other(one, other):
    assert normalise_address(one) != normalise_address(other)


@settings(max_examples=2000, deadline=None)
@given(st.text(max_size=40))
def test_normalising_twice_changes_nothing(text):
    assert normalise_address(normalise_address(text)) == normalise_address(text)


def test_the_request_keeps_the_normalised_address_and_refuses_what_is_not_one():
    assert normalized("\u200b ＡＮＮ@Example.ORG\u3000") == "ann@example.org"
    for bad in ("\u200b", "ann\u2003smith@example.org", "ann@@example.org"):
        with pytest.raises(ErasureRefused):
            normalized(bad)


def test_the_subject_hash_is_of_the_normalised_address_and_the_legacy_one_of_the_old_form():
    expected = hmac.new(KEY, b"strasse@example.de", hashlib.sha256).hexdigest()
    spellings = ("Straße@example.de", " STRASSE@EXAMPLE.DE\u200b", "ｓｔｒａｓｓｅ@example.de")
    assert {subject_hash(s, KEY) for s in spellings} == {expected}
    # For an ASCII address, with ASCII spaces around it, the old hash is today's: its keys are found.
    assert legacy_subject_hash(" Ann@Example.org ", KEY) == subject_hash("ann@example.org", KEY)
    # Where the forms differ, the old hash names another key, which an erasure destroys too.
    assert legacy_subject_hash("Straße@example.de", KEY) != expected


# The erasure, on real PostgreSQL ---------------------------------------------------------------------
LOCAL = string.ascii_lowercase + string.digits + "ßﬁ.+"


@st.composite
def addresses(draw) -> str:
    local = "".join(draw(st.lists(st.sampled_from(LOCAL), min_size=1, max_size=10)))
    domain = "".join(draw(st.lists(st.sampled_from(string.ascii_lowercase + "-"), min_size=1, max_size=8)))
    return f"{local}@{domain}.{draw(st.sampled_from(['com', 'org', 'de', 'com.tr']))}"


def _variants(character: str) -> list[str]:
    """Spellings of one character that normalise as it does."""
    found = {character, character.upper()}
    for one in list(found):
        if len(one) == 1 and "!" <= one <= "~":
            found.add(chr(ord(one) + 0xFEE0))  # its fullwidth form
    found |= {"ß": {"ss", "SS", "ẞ"}, "ﬁ": {"fi", "FI", "Fi"}, "k": {"\u212a"}, "a": {"ª"}}.get(character, set())
    return sorted(found)


@st.composite
def spellings_of(draw, address: str) -> str:
    written = "".join(draw(st.sampled_from(_variants(c))) for c in address)
    before = "".join(draw(st.lists(st.sampled_from(INVISIBLE), max_size=3)))
    after = "".join(draw(st.lists(st.sampled_from(INVISIBLE), max_size=3)))
    spelling = before + written + after
    assert normalise_address(spelling) == normalise_address(address), (spelling, address)
    return spelling


@st.composite
def near_misses(draw, address: str) -> str:
    """Another person's address that looks like the subject's."""
    local, domain = address.split("@")
    kind = draw(st.sampled_from(["dotted capital I", "zero-width inside", "one more letter", "another domain"]))
    if kind == "dotted capital I":
        other = (local.replace("i", "İ", 1) if "i" in local else "İ" + local) + "@" + domain
    elif kind == "zero-width inside":
        other = local[:1] + "\u200b" + local[1:] + "@" + domain
    elif kind == "one more letter":
        other = local + draw(st.sampled_from("xyz")) + "@" + domain
    else:
        other = local + "@other-" + domain
    assert normalise_address(other) != normalise_address(address), (other, address)
    return draw(spellings_of(other))


@st.composite
def worlds(draw) -> dict:
    """The subject's address, rows of theirs and of others in every domain, and the request's spelling."""
    address = draw(addresses())
    rows = {}
    for domain in DOMAINS:
        rows[domain] = draw(st.lists(st.tuples(
            st.sampled_from(["subject", "subject", "other"]),
            st.booleans(),  # old (past its deadline) or young
            st.sampled_from([False, False, False, True]),  # under a legal hold
        ), min_size=1, max_size=4))
        rows[domain] = [(who, old, held,
                         draw(spellings_of(address)) if who == "subject" else draw(near_misses(address)))
                        for who, old, held in rows[domain]]
    return {"address": address, "rows": rows, "request": draw(spellings_of(address)),
            "app_inserts_the_request": draw(st.booleans())}


def _row(database: AppDatabase, domain: str, email: str, old: bool, blobs, index: int) -> dict:
    now = database.now()
    at = database.bind_time
    if domain == "quiz_responses":
        return {"session_id": uuid.uuid4(), "email": email, "answers": {"goal": "keto"},
                "created_at": at(now - timedelta(hours=30 if old else 1))}
    if domain == "magic_link_tokens":
        expires = now - timedelta(hours=2) if old else now + timedelta(minutes=10)
        return {"email": email, "token_hash": uuid.uuid4().hex, "created_at": at(expires - timedelta(minutes=15)),
                "expires_at": at(expires)}
    if domain == "meal_plans":
        key = f"plans/{index}-{uuid.uuid4().hex[:8]}.pdf"
        blobs.put(key, PDF + key.encode())
        return {"payment_id": f"pay_{index}", "email": email, "pdf_blob_key": key,
                "created_at": at(now - timedelta(days=100 if old else 3))}
    return {"email": email, "reason": "chargeback", "created_at": at(now - timedelta(days=95 if old else 2))}


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow, HealthCheck.data_too_large])
@given(world=worlds())
def test_an_erasure_takes_every_spelling_of_the_subject_and_nothing_else(postgres_server, tmp_path_factory, world):
    database = AppDatabase(new_database(postgres_server))
    try:
        erasure = Erasure(database, tmp_path_factory.mktemp("erasure"))
        subject = normalise_address(world["address"])
        made: dict[str, list[tuple[str, str, bool, bool]]] = {}  # domain: [(id, who, old, held)]
        for domain, rows in world["rows"].items():
            ids = _insert(database, domain, [_row(database, domain, email, old, erasure.blob_store, i)
                                             for i, (_, old, _, email) in enumerate(rows)])
            made[domain] = [(rid, who, old, held) for rid, (who, old, held, _) in zip(ids, rows)]
            for rid, _, _, held in made[domain]:
                if held:
                    place_hold(database, domain, rid)
        if world["app_inserts_the_request"]:  # the app's own INSERT, the address as it was typed
            with database.begin() as connection:
                request_id = connection.execute(sa.text(
                    "INSERT INTO gdpr_erasure_requests (email) VALUES (:email) RETURNING id"),
                    {"email": world["request"]}).scalar_one()
        else:
            request_id = erasure.requests.request(world["request"]).id
        before = {domain: table_rows(database, domain) for domain in DOMAINS}
        now = database.now()

        outcome = erasure.run(request_id, "erasure-run")

        after = {domain: table_rows(database, domain) for domain in DOMAINS}
        left, held, kept = set(), set(), set()
        for domain, rows in made.items():
            for rid, who, old, on_hold in rows:
                was = before[domain][rid]
                assert (normalise_address(was["email"]) == subject) == (who == "subject")
                if who == "other" or on_hold:
                    assert after[domain].get(rid) == was, (domain, who, "held" if on_hold else "another person")
                    if who == "subject":
                        left.add((domain, rid))
                        held.add((domain, rid))
                elif domain == "email_blacklist" and not old:
                    assert after[domain].get(rid) == was, "a blacklist entry went before its deadline"
                    left.add((domain, rid))
                    kept.add(rid)
                elif domain == "meal_plans":  # the purchase stays, without the address or the PDF
                    row = after[domain][rid]
                    assert row["email"] == f"erased-by-request-{request_id}@erased.invalid"
                    assert row["pdf_blob_key"] is None and erasure.blob_store.get(was["pdf_blob_key"]) is None
                else:
                    assert rid not in after[domain], (domain, "a row of the subject is left")
        # Whatever the spellings: no row left names the subject but those kept by a hold or the policy.
        still = {(domain, rid) for domain in DOMAINS for rid, row in after[domain].items()
                 if normalise_address(row["email"] or "") == subject}
        assert still == left
        # No blacklist entry, the subject's or anyone's, went before its deadline.
        young = {rid for rid, row in before["email_blacklist"].items()
                 if database.read_time(row["created_at"]) + timedelta(days=90) > now}
        assert young <= set(after["email_blacklist"])

        request = erasure.requests.get(request_id)
        assert request.status == ("completed" if not left else "partially_blocked"), outcome.outcome
        assert {rid for k in request.kept_by_policy for rid in k.record_ids} == kept
        items = ManualQueue(database).list()
        assert {(i.domain, i.record_id) for i in items} == held
        assert {i.reason for i in items} <= {"legal_hold_conflict"}
        assert "@" not in (request.outcome or "")
    finally:
        database.dispose()
