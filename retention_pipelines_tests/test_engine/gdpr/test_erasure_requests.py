"""Requests for erasure (engine/gdpr/requests.py and migration 0005), on real PostgreSQL and on SQLite:
normalisation and validation of the address, one open request per address (also under 8 concurrent
requesters), the deadline and its one extension, completion that replaces the address by its keyed
hash, the rows the app inserts itself, and error messages that never carry the address."""

from __future__ import annotations

import hashlib
import hmac
import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa

from retention_pipelines.engine.gdpr.requests import ErasureRefused, ErasureRequests, normalized, subject_hash
from retention_pipelines.engine.identity.subjects import normalise_address
from retention_pipelines.stores import AppDatabase

KEY = b"test-erasure-key-0123456789abcdef"
OTHER_KEY = b"another-erasure-key-fedcba9876543210"
ADDRESS = "Alice.Example+gdpr@Example.COM"
NORMALIZED = "alice.example+gdpr@example.com"
DAY = timedelta(days=1)
MONTH = timedelta(days=30)
TABLE = "gdpr_erasure_requests"


@pytest.fixture
def requests(any_database) -> ErasureRequests:
    return ErasureRequests(any_database, KEY)


def expected_hash(address: str, key: bytes = KEY) -> str:
    return hmac.new(key, normalise_address(address).encode(), hashlib.sha256).hexdigest()


def raw_rows(database: AppDatabase) -> list[dict]:
    with database.connect() as connection:
        return [dict(row._mapping) for row in connection.exec_driver_sql(f"SELECT * FROM {TABLE} ORDER BY id")]


def refused(call, *args, words: str, addresses: tuple[str, ...] = (ADDRESS, NORMALIZED)) -> ErasureRefused:
    with pytest.raises(ErasureRefused) as caught:
        call(*args)
    message = str(caught.value)
    assert words in message, message
    for address in addresses:
        if address.strip():
            assert address.lower() not in message.lower(), message
    assert "@" not in message, message
    return caught.value


# Normalisation and validation -------------------------------------------------------------------
def test_request_normalizes_the_address_and_is_due_a_month_after_receipt(requests, any_database):
    before = any_database.now()
    request = requests.request(f"  {ADDRESS}  ")
    after = any_database.now()

    assert request.status == "received" and request.completed_at is None
    assert request.extension_reason is None and request.outcome is None
    assert before - timedelta(seconds=1) <= request.received_at <= after + timedelta(seconds=1)
    assert request.due_at - request.received_at == MONTH
    assert requests.address(request.id) == NORMALIZED
    [row] = raw_rows(any_database)
    assert row["email"] == NORMALIZED and row["subject_hash"] is None and row["status"] == "received"


@pytest.mark.parametrize("due_within", [timedelta(days=7), timedelta(days=45)])
def test_due_at_is_received_at_plus_due_within(any_database, due_within):
    request = ErasureRequests(any_database, KEY, due_within).request(ADDRESS)
    assert request.due_at - request.received_at == due_within


BAD_ADDRESSES = {
    "empty": "",
    "blank": "   ",
    "two addresses": "alice@example.com,bob@example.com",
    "two addresses with a space": "alice@example.com bob@example.com",
    "spaces inside": "alice smith@example.com",
    "no domain": "alice@",
    "domain without a dot": "alice@example",
    "domain starting with a dot": "alice@.com",
    "no @": "alice.example.com",
    "300 characters": "a" * 60 + "@" + "b" * 235 + ".com",
}


@pytest.mark.parametrize("address", list(BAD_ADDRESSES.values()), ids=list(BAD_ADDRESSES))
def test_a_bad_address_is_refused_and_nothing_is_stored(requests, any_database, address):
    assert len(BAD_ADDRESSES["300 characters"]) == 300
    refused(requests.request, address, words="not an e-mail address", addresses=(address,))
    assert raw_rows(any_database) == []


def test_the_longest_allowed_address_is_taken():
    longest = "a" * 64 + "@" + "b" * 185 + ".com"
    assert len(longest) == 254
    assert normalized(longest) == longest
    with pytest.raises(ErasureRefused):
        normalized("a" + longest)


# One open request per address --------------------------------------------------------------------
def test_a_second_open_request_for_the_same_address_in_another_case_is_refused(requests, any_database):
    first = requests.request(ADDRESS)
    refused(requests.request, NORMALIZED.upper(), words="exists already")
    refused(requests.request, NORMALIZED, words="exists already")
    assert [row["id"] for row in raw_rows(any_database)] == [first.id]
    other = requests.request("bob@example.com")  # another address is its own request
    assert other.id != first.id


def test_the_unique_index_keeps_one_open_request_even_without_the_engine(requests, any_database):
    requests.request(ADDRESS)
    with pytest.raises(sa.exc.IntegrityError):
        with any_database.begin() as connection:
            connection.execute(sa.text(f"INSERT INTO {TABLE} (email) VALUES (:email)"), {"email": NORMALIZED.upper()})
    assert len(raw_rows(any_database)) == 1


def test_concurrent_requests_for_the_same_address_make_exactly_one(pg_url, pg_database):
    barrier = threading.Barrier(8)
    made, refusals, errors = [], [], []

    def requester(index: int) -> None:
        database = AppDatabase(pg_url)
        try:
            address = ADDRESS if index % 2 else ADDRESS.upper()
            barrier.wait(timeout=30)
            made.append(ErasureRequests(database, KEY).request(address).id)
        except ErasureRefused as exc:
            refusals.append(str(exc))
        except Exception as exc:  # noqa: BLE001 - any other outcome is a failure the test reports
            errors.append(repr(exc))
        finally:
            database.dispose()

    threads = [threading.Thread(target=requester, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)

    assert errors == []
    assert len(made) == 1 and len(refusals) == 7, (made, refusals)
    assert all("exists already" in message and "@" not in message for message in refusals)
    rows = raw_rows(pg_database)
    assert [row["id"] for row in rows] == made and rows[0]["email"] == NORMALIZED


def test_a_new_request_is_taken_once_the_previous_one_is_complete(requests, any_database):
    first = requests.request(ADDRESS)
    requests.complete(first.id, "deleted everywhere")
    second = requests.request(ADDRESS.upper())
    assert second.id != first.id and second.status == "received"
    assert requests.address(second.id) == NORMALIZED
    third_try = refused(requests.request, ADDRESS, words="exists already")
    assert third_try is not None

    requests.complete(second.id, "deleted again")
    rows = raw_rows(any_database)
    # Both completed requests of the same subject carry the same hash: a repeat is recognisable.
    assert [row["subject_hash"] for row in rows] == [expected_hash(ADDRESS)] * 2


# Completion ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("partially_blocked, status", [(False, "completed"), (True, "partially_blocked")])
def test_complete_replaces_the_address_by_its_keyed_hash(requests, any_database, partially_blocked, status):
    request = requests.request(ADDRESS)
    before = any_database.now()
    done = requests.complete(request.id, "3 tables erased; 1 row held", partially_blocked=partially_blocked)

    assert done.status == status and done.outcome == "3 tables erased; 1 row held"
    assert done.completed_at is not None and done.completed_at >= before - timedelta(seconds=1)
    assert (done.received_at, done.due_at) == (request.received_at, request.due_at)
    [row] = raw_rows(any_database)
    assert row["email"] is None
    assert row["subject_hash"] == expected_hash(NORMALIZED) == subject_hash(ADDRESS, KEY)
    assert len(row["subject_hash"]) == 64
    for column, value in row.items():  # the address is gone from every column
        assert "@" not in str(value), (column, value)
        assert "alice" not in str(value).lower(), (column, value)

    refused(requests.address, request.id, words="its address is gone")
    refused(requests.complete, request.id, "again", words="already")
    refused(requests.extend, request.id, DAY, "backlog", words="cannot be extended")


def test_the_same_address_hashes_differently_under_another_key(any_database):
    first = ErasureRequests(any_database, KEY)
    second = ErasureRequests(any_database, OTHER_KEY)
    first.complete(first.request(ADDRESS).id, "done")
    second.complete(second.request(ADDRESS).id, "done")
    hashes = [row["subject_hash"] for row in raw_rows(any_database)]
    assert hashes == [expected_hash(ADDRESS, KEY), expected_hash(ADDRESS, OTHER_KEY)]
    assert hashes[0] != hashes[1]
    assert hashlib.sha256(NORMALIZED.encode()).hexdigest() not in hashes  # keyed, not a plain digest


def test_unknown_ids_are_refused(requests):
    for call, args in [(requests.get, (404,)), (requests.address, (404,)), (requests.complete, (404, "done")),
                       (requests.extend, (404, DAY, "backlog"))]:
        refused(call, *args, words="no erasure request 404")


# Extension -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("days", [1, 30, 60])
def test_extend_moves_the_deadline_once_and_records_the_reason(requests, days):
    request = requests.request(ADDRESS)
    extended = requests.extend(request.id, timedelta(days=days), "  backlog after the migration  ")
    assert extended.due_at == request.due_at + timedelta(days=days)
    assert extended.extension_reason == "backlog after the migration"
    assert extended.status == "received" and requests.address(request.id) == NORMALIZED

    refused(requests.extend, request.id, DAY, "once more", words="extended already")
    assert requests.get(request.id).due_at == extended.due_at


@pytest.mark.parametrize("by", [timedelta(0), -DAY, timedelta(days=61), timedelta(days=60, seconds=1)])
def test_extend_is_between_one_and_sixty_days(requests, by):
    request = requests.request(ADDRESS)
    refused(requests.extend, request.id, by, "backlog", words="between 1 and 60 days")
    assert requests.get(request.id) == request


@pytest.mark.parametrize("reason, words", [("", "needs its reason"), ("   ", "needs its reason"),
                                           (None, "needs its reason"),
                                           ("asked by alice.example@example.com", "must not contain personal data")])
def test_extend_needs_a_reason_without_an_address(requests, reason, words):
    request = requests.request(ADDRESS)
    refused(requests.extend, request.id, DAY, reason, words=words,
            addresses=(ADDRESS, NORMALIZED, "alice.example@example.com"))
    assert requests.get(request.id).extension_reason is None


# Listing and days left -----------------------------------------------------------------------------
def test_list_is_ordered_by_due_date(requests):
    first = requests.request("first@example.com")
    second = requests.request("second@example.com")
    third = requests.request("third@example.com")
    requests.extend(first.id, 10 * DAY, "backlog")
    assert [r.id for r in requests.list()] == [second.id, third.id, first.id]
    assert [r.id for r in requests.list(third.id)] == [third.id]
    assert requests.list(404) == []


def test_days_left_counts_to_the_deadline(requests):
    request = requests.request(ADDRESS)
    assert request.days_left(request.received_at) == 30.0
    assert request.days_left(request.received_at + timedelta(days=29, hours=12)) == 0.5
    assert request.days_left(request.due_at + 2 * DAY) == -2.0


# The app's own rows and the table's constraints ----------------------------------------------------
def test_the_app_inserts_a_request_with_only_the_address(requests, any_database):
    before = any_database.now()
    with any_database.begin() as connection:
        connection.execute(sa.text(f"INSERT INTO {TABLE} (email) VALUES (:email)"), {"email": ADDRESS})
    after = any_database.now()

    [request] = requests.list()
    assert request.status == "received" and request.completed_at is None
    assert before - timedelta(seconds=1) <= request.received_at <= after + timedelta(seconds=1)
    assert request.due_at - request.received_at == MONTH
    assert requests.address(request.id) == NORMALIZED  # read back normalised
    refused(requests.request, NORMALIZED, words="exists already")

    done = requests.complete(request.id, "done")
    assert done.status == "completed"
    [row] = raw_rows(any_database)
    assert row["email"] is None and row["subject_hash"] == expected_hash(ADDRESS)


def test_a_request_the_app_inserted_in_another_spelling_is_the_same_subject(requests, any_database):
    """The app stores the address as it was typed; every comparison normalises it the one way."""
    typed = "\u200bＡＬＩＣＥ.Example+GDPR@example.com\u3000"
    with any_database.begin() as connection:
        connection.execute(sa.text(f"INSERT INTO {TABLE} (email) VALUES (:email)"), {"email": typed})
    [request] = requests.list()
    assert requests.address(request.id) == NORMALIZED
    refused(requests.request, ADDRESS, words="exists already", addresses=(ADDRESS, NORMALIZED, typed))
    done = requests.complete(request.id, "done")
    assert done.subject_hash == subject_hash(ADDRESS, KEY)


@pytest.mark.parametrize("values", [
    "(email, status) VALUES ('carol@example.com', 'pending')",  # not a status
    "(email, status) VALUES (NULL, 'received')",  # an open request without its address
    "(status) VALUES ('received')",
])
def test_the_table_refuses_bad_rows(any_database, values):
    with pytest.raises(sa.exc.IntegrityError):
        with any_database.begin() as connection:
            connection.exec_driver_sql(f"INSERT INTO {TABLE} {values}")
    assert raw_rows(any_database) == []


def test_a_closed_request_may_be_without_an_address(any_database):
    with any_database.begin() as connection:
        connection.exec_driver_sql(f"INSERT INTO {TABLE} (email, subject_hash, status) "
                                   f"VALUES (NULL, '{'0' * 64}', 'completed')")
        connection.exec_driver_sql(f"INSERT INTO {TABLE} (email, subject_hash, status) "
                                   f"VALUES (NULL, '{'1' * 64}', 'partially_blocked')")
    assert [row["status"] for row in raw_rows(any_database)] == ["completed", "partially_blocked"]


@pytest.mark.parametrize("due_days, by, allowed", [(30, 60, True), (31, 60, False), (45, 45, True), (45, 46, False),
                                                   (90, 1, False)])
def test_no_extension_takes_the_deadline_past_ninety_days_of_receipt(any_database, due_days, by, allowed):
    requests = ErasureRequests(any_database, KEY, due_within=timedelta(days=due_days))
    request = requests.request(ADDRESS)
    if allowed:
        assert requests.extend(request.id, timedelta(days=by), "backlog").due_at - request.received_at <= \
            timedelta(days=90)
    else:
        refused(requests.extend, request.id, timedelta(days=by), "backlog", words="more than 90 days after")
        assert requests.get(request.id) == request
