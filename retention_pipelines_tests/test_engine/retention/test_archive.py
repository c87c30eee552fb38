"""Archived domains: every deleted row is in exactly one verified object, named by its audit row;
an object that does not verify keeps its rows in place."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

import pytest
import sqlalchemy as sa

from retention_pipelines.engine import ArchiveVerificationFailed, RetentionEngine
from retention_pipelines.engine.archive.format import verify
from retention_pipelines.engine.oversight.queue import ManualQueue
from retention_pipelines.stores import archive_store_from_url
from retention_pipelines_tests.support.app_rows import archive_root, insert_quiz_rows, remaining_ids
from retention_pipelines_tests.support.archives import (
    CorruptingStore,
    archive_objects,
    archived_rows,
    configured_keys,
    manifests,
)
from retention_pipelines_tests.support.audit_rows import audit_rows
from retention_pipelines_tests.support.engines import archiving, engine_for
from retention_pipelines_tests.support.invariants import assert_each_deleted_audited_once

EMAIL = "someone.private@example.invalid"


@pytest.fixture(params=["s3", "local"])
def archive_url(request) -> str:
    return request.getfixturevalue("s3_archive_url" if request.param == "s3" else "local_archive_url")


def test_every_deleted_row_is_in_exactly_one_verified_object(any_database, policies, quiz_policy, archive_url):
    due = insert_quiz_rows(any_database, [timedelta(days=2, minutes=i) for i in range(10)], email=EMAIL)
    fresh = insert_quiz_rows(any_database, [timedelta(hours=1)] * 2, email=EMAIL)
    policy = archiving(quiz_policy, batch_size=3, exclude_columns=["email"])
    engine = engine_for(policy, policies, any_database, archive_url)
    store = archive_store_from_url(archive_url)
    expected = rows_as_archived(any_database, exclude={"email"})

    report = engine.run("archive-run")
    assert report.archived.rows == 10 and len(report.archived.batches) == 4
    assert engine.verify_archive(report.archived) == []
    assert remaining_ids(any_database) == set(fresh)

    objects = archive_objects(archive_url)
    by_object = manifests(objects)
    assert set(objects) == {*by_object, *(k + ".manifest.json" for k in by_object)}
    holder: dict[str, str] = {}
    for key, manifest in by_object.items():
        data = objects[key]
        assert verify(data, manifest) is None
        decrypted = archived_rows(any_database, data, manifest)
        lines = [row for _, row in decrypted]
        assert len(lines) == manifest["rows"] == len(manifest["record_ids"])
        assert [line["id"] for line in lines] == manifest["record_ids"] == [rid for rid, _ in decrypted]
        assert "email" not in manifest["columns"]
        for line in lines:
            assert set(line) == {"id", "session_id", "answers", "created_at"}
            assert line == expected[line["id"]]
        assert EMAIL.encode() not in data and EMAIL not in json.dumps(lines)
        for record_id in manifest["record_ids"]:
            assert record_id not in holder, f"{record_id} is archived twice: {holder[record_id]} and {key}"
            holder[record_id] = key
    assert set(holder) == set(due)

    deleted = audit_rows(any_database, "deleted")
    assert_each_deleted_audited_once(any_database, set(due) | set(fresh), remaining_ids(any_database))
    for row in deleted:
        assert row["archive_uri"] == store.uri(holder[row["record_id"]])
    for row in audit_rows(any_database):
        text = " ".join(str(value) for value in row.values())
        assert "@" not in text and EMAIL not in text


def rows_as_archived(database, exclude: set[str]) -> dict[str, dict]:
    """The table's rows as JSON would carry them, by id, without the excluded columns."""
    table = sa.Table("quiz_responses", sa.MetaData(), autoload_with=database.engine)

    def plain(value):
        if isinstance(value, datetime):
            return value.isoformat()
        return str(value) if isinstance(value, uuid.UUID) else value

    with database.engine.connect() as connection:
        rows = connection.execute(sa.select(table)).mappings().all()
    return {str(row["id"]): {k: plain(v) for k, v in row.items() if k not in exclude} for row in rows}


def test_an_object_that_reads_back_wrong_is_not_acted_on(any_database, policies, quiz_policy, local_archive_url):
    due = insert_quiz_rows(any_database, [timedelta(days=2, minutes=i) for i in range(5)])
    policy = archiving(quiz_policy, batch_size=3)
    engine = RetentionEngine(policy, policies.policy_version, any_database,
                             CorruptingStore(archive_root(local_archive_url)), keys=configured_keys(any_database))

    with pytest.raises(ArchiveVerificationFailed, match="sha256"):
        engine.run("corrupt-read")
    assert remaining_ids(any_database) == set(due)
    # Nothing acted on; the failed object reached a person, once, and that is audited.
    assert [row["action"] for row in audit_rows(any_database)] == ["queue_opened"]
    [item] = ManualQueue(any_database).list()
    assert item.reason == "archive_verification_failed" and item.status == "open"
    assert item.record_id.startswith(local_archive_url) and "sha256" in item.detail


def overwrite(archive_url: str, key: str, data: bytes) -> None:
    parsed = urlparse(archive_url)
    if parsed.scheme == "file":
        (Path(parsed.path) / key).write_bytes(data)
    else:
        import boto3

        boto3.client("s3").put_object(Bucket=parsed.netloc, Key=f"{parsed.path.strip('/')}/{key}", Body=data)


def test_an_object_changed_after_archiving_is_not_acted_on(pg_database, policies, quiz_policy, archive_url):
    """Between the archive step and the act step (separate Dagster steps), the object is
    overwritten: its rows must stay and the run must fail with ArchiveVerificationFailed."""
    insert_quiz_rows(pg_database, [timedelta(days=2, minutes=i) for i in range(6)])
    policy = archiving(quiz_policy, batch_size=3)
    engine = engine_for(policy, policies, pg_database, archive_url)
    found = engine.find()
    archived = engine.archive(found)
    assert len(archived.batches) == 2
    tampered = archived.batches[0]
    overwrite(archive_url, tampered.key, b'{"key":"0","nonce":"","rows":1,"data":""}\n')
    manifest = manifests(archive_objects(archive_url))[tampered.key]
    assert engine.verify_archive(archived) != []

    with pytest.raises(ArchiveVerificationFailed):
        engine.act(found, archived, "tampered")
    assert set(manifest["record_ids"]) <= remaining_ids(pg_database)
    assert not set(manifest["record_ids"]) & {r["record_id"] for r in audit_rows(pg_database)}


def test_json_text_written_over_several_lines_is_archived_one_row_per_line(any_database, policies, quiz_policy,
                                                                          local_archive_url):
    """The app may store JSON as it likes (SQLite keeps the text as written): each row still
    becomes one JSON line holding the same value."""
    due = insert_quiz_rows(any_database, [timedelta(days=2, minutes=i) for i in range(3)])
    with any_database.engine.begin() as connection:
        connection.execute(sa.text("UPDATE quiz_responses SET answers = :answers WHERE id = :id"),
                           {"answers": '{\n  "weight_kg": 80,\n  "goal": "lose"\n}', "id": due[1]})
    engine = engine_for(archiving(quiz_policy, batch_size=10), policies, any_database, local_archive_url)

    report = engine.run("pretty-json")
    assert report.acted.acted_on == 3
    objects = archive_objects(local_archive_url)
    ((key, manifest),) = manifests(objects).items()
    assert verify(objects[key], manifest) is None
    lines = [row for _, row in archived_rows(any_database, objects[key], manifest)]
    assert len(lines) == 3
    archived = {row["id"]: row for row in lines}
    assert archived[due[1]]["answers"] == {"weight_kg": 80, "goal": "lose"}
