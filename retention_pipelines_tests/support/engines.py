"""A domain's engine as the tests build it: on an archive URL, archiving, meal plans with a blob
store; and instants compared at whole seconds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from retention_pipelines.engine import RetentionEngine
from retention_pipelines.policies import load_policies
from retention_pipelines.stores import AppDatabase, archive_store_from_url, load_settings
from retention_pipelines_tests.support.app_rows import _insert
from retention_pipelines_tests.support.archives import configured_keys

QUIZ = "quiz_responses"


def engine_for(policy, policies, database: AppDatabase, archive_url: str) -> RetentionEngine:
    return RetentionEngine(policy, policies.policy_version, database, archive_store_from_url(archive_url),
                           keys=configured_keys(database) if policy.archive.enabled else None)


def archiving(policy, batch_size: int | None = None, exclude_columns: list[str] | None = None):
    archive = policy.archive.model_copy(update={"enabled": True, "exclude_columns": exclude_columns or [],
                                                "keep_for": timedelta(days=365)})
    update = {"archive": archive}
    if batch_size is not None:
        update["batch_size"] = batch_size
    return policy.model_copy(update=update)


def whole_second(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(microsecond=0)


def db_now(database: AppDatabase) -> datetime:
    return database.now()


def meal_plans_engine(policies, database, archive_url, blob_store, batch_size=None, storage_class=None):
    policy = policies.domains["meal_plans"]
    if batch_size:
        policy = policy.model_copy(update={"batch_size": batch_size})
    return RetentionEngine(policy, policies.policy_version, database,
                           archive_store_from_url(archive_url, storage_class),
                           blob_store=blob_store, keys=configured_keys(database))


def blacklist_deleted_by_a_run(database: AppDatabase, count: int, run_id: str = "run-in-error") -> list[str]:
    """`count` email_blacklist entries past their deadline, deleted (archived first) by run `run_id`
    on the configured archive; their ids."""
    now = database.now()
    ids = _insert(database, "email_blacklist", [
        {"email": f"person{i}@example.com", "reason": "refund_abuse", "created_at": now - timedelta(days=95)}
        for i in range(count)])
    policies = load_policies()
    RetentionEngine(policies.domains["email_blacklist"], policies.policy_version, database,
                    archive_store_from_url(load_settings().resolved_archive_url()),
                    keys=configured_keys(database)).run(run_id)
    return ids
