"""The record of processing (GDPR Art. 30(1)) as the policy file states it: per domain, what is kept,
how long (in the database and in the archive), why, on what grounds, and who receives it. One
source for the compliance report's table and `retention policies schedule`, so that both say the
same."""

from __future__ import annotations

from dataclasses import dataclass

from retention_pipelines.policies.model import PROCESSING_FIELDS, DomainPolicy, PolicyFile, format_duration

NOT_ARCHIVED = "not archived"
# Lists share a cell in a table or a CSV: joined by this, which no category or recipient needs.
ITEM_SEPARATOR = "; "


@dataclass(frozen=True)
class ProcessingEntry:
    """One domain's line of the record. None: the policy leaves the field out (a blank cell)."""

    domain: str
    data: str  # where it is: the table, and the objects its rows name
    retain_for: str  # the policy file's own spelling: '24h', '90d', '0s'
    counted_from: str  # the clock column the period runs from
    archive_keep_for: str  # how long each archive copy lives, or NOT_ARCHIVED
    purpose: str | None
    lawful_basis: str | None  # 'Art. 6(1)(a) consent', as the law cites it
    special_category_condition: str | None  # 'Art. 9(2)(a) explicit consent'
    data_categories: tuple[str, ...] | None
    recipients: tuple[str, ...] | None  # () : disclosed to no one

    @classmethod
    def of(cls, policy: DomainPolicy) -> ProcessingEntry:
        basis = policy.lawful_basis
        return cls(
            domain=policy.name, data=where_kept(policy), retain_for=format_duration(policy.retain_for),
            counted_from=policy.clock_column,
            archive_keep_for=format_duration(policy.archive.keep_for)
            if policy.archive.enabled and policy.archive.keep_for else NOT_ARCHIVED,
            purpose=policy.purpose, lawful_basis=basis.cited() if basis else None,
            special_category_condition=basis.cited_condition() if basis else None,
            data_categories=None if policy.data_categories is None else tuple(policy.data_categories),
            recipients=None if policy.recipients is None else tuple(policy.recipients))

    def cells(self) -> dict[str, str | None]:
        """Column → text, lists joined: the form of a table cell ('none' for no recipients)."""
        row = {column: getattr(self, column) for column in COLUMNS}
        for column in ("data_categories", "recipients"):
            items = row[column]
            row[column] = None if items is None else ITEM_SEPARATOR.join(items) or "none"
        return row

    def fields(self) -> dict[str, object]:
        """Column → value, lists as lists: the form of a JSON document."""
        return {column: list(value) if isinstance(value, tuple) else value
                for column in COLUMNS for value in [getattr(self, column)]}


def where_kept(policy: DomainPolicy) -> str:
    """'table meal_plans; the objects named by pdf_blob_key'."""
    objects = f"; the objects named by {policy.blob_key_column}" if policy.blob_key_column else ""
    return f"table {policy.table}{objects}"


COLUMNS = ("domain", "data", "retain_for", "counted_from", "archive_keep_for", "purpose", "lawful_basis",
           "special_category_condition", "data_categories", "recipients")


def record_of_processing(policies: PolicyFile) -> list[ProcessingEntry]:
    """Every domain of the file, enabled or not (a paused domain's data is still held), in its order."""
    return [ProcessingEntry.of(policy) for policy in policies.domains.values()]


def missing_fields(policies: PolicyFile) -> list[str]:
    """One sentence per field of the record a domain leaves out, naming the domain and the field."""
    return [f"domain {policy.name}, field {name}: missing; the record of processing names {PROCESSING_FIELDS[name]}"
            for policy in policies.domains.values() for name in policy.missing_processing_fields]
