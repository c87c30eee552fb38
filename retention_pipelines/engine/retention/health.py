"""Is everything a retention run needs there? (the seed's check_cleanup_health)

Each probe names its dependency and, when it fails, what to do, with the runbook's section.
With `breakers`, the probes of the database, the lock service and the stores go through their
service's circuit breaker: a dependency that failed its probes several times in a row is reported
down ("circuit open") without being called, until its breaker lets a probe through again. These
breakers are the probes' own; a run never goes through them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa

from retention_pipelines import schema
from retention_pipelines.engine.identity.subjects import subject_index, subject_index_problem
from retention_pipelines.engine.retention.table import DomainTable
from retention_pipelines.errors import first_line
from retention_pipelines.policies import DomainPolicy
from retention_pipelines.redaction import display_url
from retention_pipelines.stores import AppDatabase, ArchiveStore, BlobStore, PolicyMismatch, StoreUnavailable
from retention_pipelines.stores.breaker import CircuitOpen, ServiceBreaker

RUNBOOK = "docs/runbooks/health.md"
PROBE = b"retention health probe\n"


@dataclass(frozen=True)
class Probe:
    name: str  # database, migrations, policy:<domain>, lock_service, archive_store, blob_store
    ok: bool
    message: str


def _probe(name: str, action: str, run: Callable[[], str], breaker: ServiceBreaker | None = None) -> Probe:
    try:
        return Probe(name, True, breaker.call(run) if breaker else run())
    except CircuitOpen as exc:
        return Probe(name, False, f"not probed: {exc} — {action} (see {RUNBOOK}#{name.split(':')[0]})")
    except (StoreUnavailable, PolicyMismatch, schema.SchemaBehindError, sa.exc.SQLAlchemyError, OSError) as exc:
        # The driver's own words (psycopg2 quotes the user it tried): shown in the CLI, the check's
        # metadata and Dagster's event log.
        return Probe(name, False, f"{first_line(exc)} — {action} (see {RUNBOOK}#{name.split(':')[0]})")


def check_health(database: AppDatabase, policies: list[DomainPolicy], archive_store: ArchiveStore,
                 blob_store: BlobStore | None, redis_url: str | None,
                 breakers: Callable[[str], ServiceBreaker] | None = None) -> list[Probe]:
    def breaker(dependency: str, where: str) -> ServiceBreaker | None:
        return breakers(f"health probe of the {dependency} {where}") if breakers else None

    probes = [_probe("database", "check RETENTION_DATABASE_URL and that the server is up",
                     lambda: f"{database.display_url} answers, its clock reads {database.now():%Y-%m-%d %H:%M:%S} UTC",
                     breaker("database", database.display_url))]
    if not probes[0].ok:
        return probes
    probes.append(_probe("migrations", "run `retention db upgrade`", lambda: _migrations(database)))
    for policy in policies:
        probes.append(_probe(f"policy:{policy.name}", "fix the policy file or ask the app team for the table, "
                             "column or index", lambda p=policy: _policy(database, p)))
    if redis_url:
        probes.append(_probe("lock_service", "check RETENTION_REDIS_URL; delete a lock key without TTL",
                             lambda: _locks(redis_url), breaker("lock service", display_url(redis_url))))
    probes.append(_probe("archive_store", "check RETENTION_ARCHIVE_URL and its credentials",
                         lambda: _put_get_delete(archive_store.put, archive_store.get, archive_store.delete,
                                                 archive_store.uri),
                         breaker("archive store", archive_store.uri("").rstrip("/"))))
    if blob_store is not None:
        probes.append(_probe("blob_store", "check RETENTION_BLOB_URL and its credentials",
                             lambda: _put_get_delete(blob_store.put, blob_store.get,
                                                     lambda key: _deleted(blob_store, key), blob_store.uri),
                             breaker("blob store", blob_store.uri("").rstrip("/"))))
    return probes


def _migrations(database: AppDatabase) -> str:
    schema.ensure_current(database.engine)
    return f"at {schema.head_revision()}"


def _policy(database: AppDatabase, policy: DomainPolicy) -> str:
    problems = database.policy_problems(policy)  # what `retention policies validate --database` checks
    if problems:
        raise PolicyMismatch("; ".join(problem.removeprefix(f"{policy.source}: ") for problem in problems))
    table = DomainTable.of(policy, database)
    message = f"table {policy.table}, its columns and the index on {policy.clock_column} are there"
    if table.clock_zone:
        message += f"; its clock is read in {table.clock_zone}"
    if table.clock.nullable:
        with database.connect() as connection:
            message += (f"; {table.count_without_clock(connection)} rows without a {policy.clock_column} are "
                        "kept (clock_nulls: keep)")
    if policy.subject_column:
        found = subject_index(database, policy, table.table)
        if found.missing:
            raise PolicyMismatch(subject_index_problem(found, policy).removeprefix(f"{policy.source}: "))
        message += (f"; erasures find a subject's rows through the index {found.index}" if found.checked else
                    "; the index of the subject lookup is not checked: the demo's database shows no query plans")
    return message


def _locks(redis_url: str) -> str:
    import redis

    client = redis.Redis.from_url(redis_url, socket_connect_timeout=5, socket_timeout=5)
    try:
        keys = list(client.scan_iter(match="retention:lock:*"))
        stuck = [key.decode() for key in keys if client.ttl(key) == -1]
    except redis.exceptions.RedisError as exc:
        raise StoreUnavailable(f"lock service is unreachable: {exc}") from None
    if stuck:
        raise StoreUnavailable(f"lock {stuck[0]} has no TTL and would block its domain for ever")
    return f"reachable, {len(keys)} domain lock(s) held, each with a TTL"


def _put_get_delete(put, get, delete, uri) -> str:
    key = f"_health/{uuid.uuid4().hex}"
    put(key, PROBE)
    try:
        if get(key) != PROBE:
            raise StoreUnavailable(f"{uri(key)} did not read back as written")
    finally:
        delete(key)
    return f"put, get and delete of {uri(key)} worked"


def _deleted(blob_store: BlobStore, key: str) -> None:
    failed = blob_store.delete_many([key])
    if failed:
        raise StoreUnavailable(f"{blob_store.uri(key)} could not be deleted: {failed[key]}")
