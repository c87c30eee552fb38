"""The erasure run's machinery and rows for engine tests: one subject (Ann, her address written in
several cases) beside others in all four domains, the engines of each domain on local archive and
blob folders, with fixed keys so that a run in another process reads the same archives."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa

from retention_pipelines import schema
from retention_pipelines.engine import RetentionEngine
from retention_pipelines.engine.archive.keys import ArchiveKeys
from retention_pipelines.engine.gdpr.erasure_run import DomainErasure, SubjectErasure
from retention_pipelines.engine.gdpr.requests import ErasureRequests
from retention_pipelines.policies import load_policies
from retention_pipelines.stores import AppDatabase, BlobStore
from retention_pipelines.stores.archive import LocalArchiveStore
from retention_pipelines.stores.blob import LocalBlobStore
from retention_pipelines_tests.support.app_rows import _insert

ANN = "Ann.Subject@Example.org"
ANN_SPELLINGS = (ANN, ANN.lower(), ANN.upper())  # how the app may have written her address in its rows
BOB = "bob.other@example.net"
MASTER_KEY = bytes(range(100, 132))
HASH_KEY = b"erasure-tests-hash-key-0123456789"
DOMAINS = ("quiz_responses", "magic_link_tokens", "meal_plans", "email_blacklist")
PDF = b"%PDF-1.7\n% a meal plan\n%%EOF\n"


class Erasure:
    """Requests, keys and each domain's engine for one database, archive and blob folder."""

    def __init__(self, database: AppDatabase, folder: Path, blob_store: BlobStore | None = None,
                 batch_size: int | None = None):
        self.database, self.folder = database, folder
        self.policies = load_policies()
        self.keys = ArchiveKeys(database, MASTER_KEY, HASH_KEY)
        self.requests = ErasureRequests(database, HASH_KEY, timedelta(days=30))
        self.archive_store = LocalArchiveStore(folder / "archive")
        self.blob_store = blob_store or LocalBlobStore(folder / "blobs")
        self.batch_size = batch_size
        self.subject_erasure = SubjectErasure(self.requests, self.keys, self.archive_store,
                                              self.policies.policy_version, list(self.policies.domains.values()))

    def engine(self, domain: str) -> RetentionEngine:
        policy = self.policies.domains[domain]
        if self.batch_size:
            policy = policy.model_copy(update={"batch_size": self.batch_size})
        return RetentionEngine(policy, self.policies.policy_version, self.database, self.archive_store,
                               blob_store=self.blob_store if policy.blob_key_column else None,
                               keys=self.keys if policy.archive.enabled else None)

    def erase(self, domain: str, request_id: int, run_id: str, dry_run: bool = False) -> DomainErasure:
        return self.subject_erasure.erase_domain(self.engine(domain), request_id, run_id, dry_run)

    def erase_all(self, request_id: int, run_id: str, dry_run: bool = False) -> list[DomainErasure]:
        return [self.erase(domain, request_id, run_id, dry_run) for domain in DOMAINS]

    def run(self, request_id: int, run_id: str):
        """What the Dagster job does: every domain, then the key and the request in one transaction."""
        return self.subject_erasure.complete(request_id, self.erase_all(request_id, run_id), run_id)

    def ann_key_hash(self) -> str:
        return self.keys.subject_hash(ANN)


def insert_subject_rows(database: AppDatabase, blob_store: BlobStore, prefix: str = "",
                        ann_recently_blacklisted: bool = True) -> dict[str, dict[str, list[str]]]:
    """Ann and Bob in every domain, some rows young, some long past their deadline (and a quiz
    answer of nobody): {domain: {"ann": ids, "others": ids}}. Every meal plan has its PDF. Ann's
    first blacklist entry is two days old (kept until its deadline even on erasure), or, without
    `ann_recently_blacklisted`, 92 days (so that an erasure can complete)."""
    now = database.now()
    at = database.bind_time
    young, old = now - timedelta(hours=1), now - timedelta(days=100)
    rows: dict[str, dict[str, list[str]]] = {}

    def split(domain: str, ann: list[dict], others: list[dict]) -> None:
        ids = _insert(database, domain, ann + others)
        rows[domain] = {"ann": ids[:len(ann)], "others": ids[len(ann):]}

    def quiz(email, when):
        return {"session_id": new_uuid(database), "email": email, "answers": {"weight_kg": 70}, "created_at": at(when)}

    split("quiz_responses", [quiz(ANN.lower(), young), quiz(ANN.upper(), now - timedelta(hours=30))],
          [quiz(BOB, young), quiz(BOB, now - timedelta(hours=30)), quiz(None, now - timedelta(hours=30))])

    def token(email, expires):
        return {"email": email, "token_hash": uuid.uuid4().hex, "created_at": at(expires - timedelta(minutes=15)),
                "expires_at": at(expires)}

    split("magic_link_tokens", [token(ANN, now + timedelta(minutes=10)), token(ANN.lower(), now - timedelta(hours=2))],
          [token(BOB, now + timedelta(minutes=10)), token(BOB, now - timedelta(hours=2))])

    def plan(email, when, name):
        key = f"plans/{prefix}{name}.pdf"
        blob_store.put(key, PDF + key.encode())
        return {"payment_id": f"pay_{uuid.uuid4().hex[:12]}", "email": email, "pdf_blob_key": key,
                "created_at": at(when)}

    split("meal_plans", [plan(ANN, now - timedelta(days=3), "ann-new"), plan(ANN.upper(), old, "ann-old")],
          [plan(BOB, now - timedelta(days=3), "bob-new"), plan(BOB, old, "bob-old")])

    def listed(email, when):
        return {"email": email, "reason": "chargeback", "created_at": at(when)}

    ann_listed = now - timedelta(days=2 if ann_recently_blacklisted else 92)
    split("email_blacklist", [listed(ANN.lower(), ann_listed), listed(ANN, now - timedelta(days=95))],
          [listed(BOB, now - timedelta(days=2)), listed(BOB, now - timedelta(days=95))])
    return rows


def new_uuid(database: AppDatabase):
    return str(uuid.uuid4()) if database.is_sqlite else uuid.uuid4()


def table_rows(database: AppDatabase, table: str) -> dict[str, dict]:
    """Every row of an app table by id, as the database hands it back."""
    with database.engine.connect() as connection:
        return {str(row.id): dict(row._mapping) for row in connection.execute(sa.text(f"SELECT * FROM {table}"))}


def audit(database: AppDatabase, action: str | None = None, domain: str | None = None) -> list[dict]:
    query = sa.select(schema.audit_log).order_by(schema.audit_log.c.id)
    if action is not None:
        query = query.where(schema.audit_log.c.action == action)
    if domain is not None:
        query = query.where(schema.audit_log.c.domain == domain)
    with database.engine.connect() as connection:
        return [dict(r._mapping) for r in connection.execute(query)]


def data_key_rows(database: AppDatabase) -> list[dict]:
    with database.engine.connect() as connection:
        rows = connection.execute(sa.select(schema.data_keys).order_by(schema.data_keys.c.id))
        return [dict(r._mapping) for r in rows]


def place_hold(database: AppDatabase, domain: str, record_id: str) -> None:
    with database.engine.begin() as connection:
        connection.execute(sa.insert(schema.legal_holds).values(domain=domain, record_id=record_id,
                                                                reason="litigation hold, case 17"))


def no_address_in_audit(database: AppDatabase) -> None:
    for entry in audit(database):
        text = " ".join(str(value) for value in entry.values())
        assert "@" not in text, f"audit entry {entry['id']} ({entry['action']}) holds an address"
