"""Tables this project owns in the app database. Alembic migrations create them (versions/)."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

# Alembic's own bookkeeping table, named so that it never collides with the app's migrations.
VERSION_TABLE = "retention_alembic_version"

# The audit log: one row per batch (what was done, under which run, policy version and archive
# object, and its link in the domain's hash chain) and one narrow row per record (the batch, the
# record id, its deadline), both written by the statement that acts on the rows, in its
# transaction (engine/audit/entries.py; the chain: engine/audit/links.py). Record ids only: never an
# address or other personal data.
audit_batches = sa.Table(
    "retention_audit_batches",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("domain", sa.String(63), nullable=False),
    sa.Column("seq", sa.BigInteger(), nullable=False),  # its position in the domain's chain: 1, 2, …
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("policy_version", sa.String(96), nullable=False),
    sa.Column("archive_uri", sa.Text(), nullable=True),
    # Changes a person made (the manual-resolution queue, holds): who, and what changed (from → to).
    sa.Column("actor", sa.String(128), nullable=True),
    sa.Column("detail", sa.Text(), nullable=True),
    sa.Column("records", sa.Integer(), nullable=False),
    sa.Column("prev_link", sa.String(64), nullable=False),
    sa.Column("link", sa.String(64), nullable=False),
    # One batch per position: two writers of a domain can never both extend its chain from one head.
    sa.UniqueConstraint("domain", "seq", name="retention_audit_batches_position"),
    sa.Index("retention_audit_batches_run", "run_id"),
    sa.Index("retention_audit_batches_occurred", "occurred_at"),
)
# A record row costs the write its three narrow columns and a BRIN summary of its batch (the rows
# arrive in batch order): a btree per row would cost as much as the DELETE it audits (benchmarks/).
# Its id (engine/audit/entries.py RECORDS_PER_BATCH), in write order, is what readers of the log
# have always ordered entries by.
audit_records = sa.Table(
    "retention_audit_records",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
    sa.Column("batch_id", sa.BigInteger(), nullable=False),
    sa.Column("record_id", sa.Text(), nullable=False),
    # When the record became due (its clock + the retention period): an auditor, and a check,
    # can see that nothing was acted on before its deadline. Null for entries that act on nothing.
    sa.Column("deadline", sa.DateTime(timezone=True), nullable=True),
)
# A legal hold is reported once per record, ever: the database refuses a second report, so two runs
# reporting one hold at once keep one entry.
audit_held_once = sa.Table(
    "retention_audit_held_once",
    metadata,
    sa.Column("domain", sa.String(63), primary_key=True),
    sa.Column("record_id", sa.Text(), primary_key=True),
)
# The log as readers see it, one row per record (a view over the two tables: migration 0013).
# The checks, the report, `retention audit show` and auditors' own SQL read it; nothing writes it.
audit_log = sa.Table(
    "retention_audit_log",
    sa.MetaData(),  # a view: never created as a table
    sa.Column("id", sa.BigInteger(), primary_key=True),
    sa.Column("domain", sa.String(63)),
    sa.Column("record_id", sa.Text()),
    sa.Column("action", sa.String(32)),
    sa.Column("run_id", sa.String(64)),
    sa.Column("occurred_at", sa.DateTime(timezone=True)),
    sa.Column("policy_version", sa.String(96)),
    sa.Column("archive_uri", sa.Text()),
    sa.Column("deadline", sa.DateTime(timezone=True)),
    sa.Column("actor", sa.String(128)),
    sa.Column("detail", sa.Text()),
    sa.Column("batch_id", sa.BigInteger()),
)

# The chains as they were before the log moved to batches (migration 0013): each row chained on
# its own by a sealer, one block per sealed chunk. Kept unchanged, read-only: the anchors written then
# recorded positions and hashes of these chains, and the verifier checks them against it; a
# migrated domain's first batch links to its last hash here.
audit_chain = sa.Table(
    "retention_audit_chain",
    metadata,
    sa.Column("domain", sa.String(63), primary_key=True),
    sa.Column("block", sa.BigInteger(), primary_key=True),
    sa.Column("first_seq", sa.BigInteger(), nullable=False),
    sa.Column("rows", sa.Integer(), nullable=False),
    sa.Column("first_id", sa.BigInteger(), nullable=False),
    sa.Column("last_id", sa.BigInteger(), nullable=False),
    sa.Column("ids", sa.LargeBinary(), nullable=False),
    sa.Column("row_hashes", sa.LargeBinary(), nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("last_hash", sa.String(64), nullable=False),
    sa.Column("sealed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)

# Each chain's end: its last position, batch id and link, moved by the statement that writes the
# batch, under this row's lock (sealed_through: the last batch id; last_block: unused since 0013).
audit_chain_heads = sa.Table(
    "retention_audit_chain_heads",
    metadata,
    sa.Column("domain", sa.String(63), primary_key=True),
    sa.Column("last_block", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("last_seq", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("last_id", sa.BigInteger(), nullable=True),
    sa.Column("last_hash", sa.String(64), nullable=False),
    sa.Column("sealed_through", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("sealed_at", sa.DateTime(timezone=True), nullable=True),
)

legal_holds = sa.Table(
    "retention_legal_holds",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("domain", sa.String(63), nullable=False),
    sa.Column("record_id", sa.Text(), nullable=False),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("placed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
    # Who placed and who released the hold: a handle, never an address (engine/oversight/holds.py).
    sa.Column("placed_by", sa.String(128), nullable=True),
    sa.Column("released_by", sa.String(128), nullable=True),
    sa.Index("retention_legal_holds_record_idx", "domain", "record_id"),
)


# SLA breaches: data kept past its allowed lag, runs too slow, failures. One open breach per
# domain and kind (a partial unique index), closed with how long it lasted.
sla_breaches = sa.Table(
    "retention_sla_breaches",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("domain", sa.String(63), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    # Seconds for retention_lag and run_duration; a count of consecutive failures for run_failures.
    sa.Column("observed", sa.Float(), nullable=False),
    sa.Column("threshold", sa.Float(), nullable=False),
    sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("duration_seconds", sa.Float(), nullable=True),
    sa.Column("run_id", sa.String(64), nullable=True),  # the remediation (catch-up) run
    sa.Column("escalation_level", sa.Integer(), nullable=False, server_default="1"),
    sa.Index("retention_sla_breaches_one_open", "domain", "kind", unique=True,
             postgresql_where=sa.text("closed_at IS NULL"), sqlite_where=sa.text("closed_at IS NULL")),
)

# What automation could not finish, for a person (engine/oversight/queue.py). One active (open or claimed)
# item per domain, record and reason: a repeat counts an attempt instead of adding an item.
manual_queue = sa.Table(
    "retention_manual_queue",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("domain", sa.String(63), nullable=False),
    sa.Column("record_id", sa.Text(), nullable=False),  # a record id, an archive object key or a partition
    sa.Column("reason", sa.String(40), nullable=False),
    sa.Column("detail", sa.Text(), nullable=False, server_default=""),
    sa.Column("status", sa.String(16), nullable=False, server_default="open"),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("claimed_by", sa.String(128), nullable=True),
    sa.Column("resolved_by", sa.String(128), nullable=True),
    sa.Column("resolution_note", sa.Text(), nullable=True),
    sa.Column("escalation_level", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="1"),
    sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("close_announced", sa.Boolean(), nullable=False, server_default=sa.false()),
    # The erasure request an item belongs to: its retry erases the record, whatever its deadline.
    sa.Column("erasure_request_id", sa.BigInteger(), nullable=True),
    sa.Index("retention_manual_queue_one_active", "domain", "record_id", "reason", unique=True,
             postgresql_where=sa.text("status IN ('open', 'claimed')"),
             sqlite_where=sa.text("status IN ('open', 'claimed')")),
    sa.Index("retention_manual_queue_due", "status", "due_at"),
)

# Requests for erasure (engine/gdpr/requests.py). The address is kept only while a request is open.
erasure_requests = sa.Table(
    "gdpr_erasure_requests",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("email", sa.Text(), nullable=True),
    sa.Column("subject_hash", sa.String(64), nullable=True),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("status", sa.String(20), nullable=False, server_default="received"),
    sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("extension_reason", sa.Text(), nullable=True),
    sa.Column("outcome", sa.Text(), nullable=True),
)

# Data keys of the encrypted archives (engine/archive/keys.py): kept only wrapped by the master key; a
# destroyed key (erasure) leaves its row, with wrapped_key NULL, as the record that it was destroyed.
data_keys = sa.Table(
    "retention_data_keys",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("key_id", sa.String(32), nullable=False, unique=True),
    sa.Column("subject_hash", sa.String(64), nullable=True),
    sa.Column("batch", sa.String(128), nullable=True, unique=True),
    sa.Column("wrapped_key", sa.LargeBinary(), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("destroyed_at", sa.DateTime(timezone=True), nullable=True),
    sa.Index("retention_data_keys_live_subject", "subject_hash", unique=True,
             postgresql_where=sa.text("destroyed_at IS NULL"), sqlite_where=sa.text("destroyed_at IS NULL")),
)

# Fencing tokens (engine/retention/fence.py, migration 0009): the run that takes a domain's lock raises its
# token; each batch transaction reads it FOR SHARE and stops unless it is its own.
domain_fences = sa.Table(
    "retention_domain_fences",
    metadata,
    sa.Column("domain", sa.String(63), primary_key=True),
    sa.Column("token", sa.BigInteger(), nullable=False),
)

# The evidence index (engine/audit/evidence.py): audit rows by record id, filled after the fact by the seal
# job, so that no batch transaction maintains an index over random record ids.
audit_record_index = sa.Table(
    "retention_audit_record_index",
    metadata,
    sa.Column("record_id", sa.Text(), primary_key=True),
    sa.Column("audit_id", sa.BigInteger(), primary_key=True),
)
audit_record_index_state = sa.Table(
    "retention_audit_record_index_state",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("indexed_through", sa.BigInteger(), nullable=False, server_default="0"),
)

# Every audit anchor written to the archive store (engine/audit/anchor.py): its key and the SHA-256
# of its bytes, so that the verifier can tell an anchor deleted or replaced in the store, and one
# the store holds that was never written here. Rows are only ever inserted.
audit_anchors = sa.Table(
    "retention_audit_anchors",
    metadata,
    sa.Column("object_key", sa.String(255), primary_key=True),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("written_at", sa.DateTime(timezone=True), nullable=False),
)
