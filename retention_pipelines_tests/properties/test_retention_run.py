"""Properties of a retention run, for any policy Hypothesis draws, found by a state machine.

The machine writes a domain's rows around their deadlines, then drives the engine one step at a
time (find, for the latest partition or a drawn partition window → archive → act, then audit),
while between any two steps the app writes rows or moves a row's clock and an operator places or
releases holds through `retention hold`. After each act step the model (support/properties/model.py) checks
the invariants: the rows, objects and audit log, what the run had to do and what it must not do;
a rerun right after a complete run must do nothing. Every example ends with its run finished, a
complete run and a rerun (`teardown`).
"""

from __future__ import annotations

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from retention_pipelines.engine import RetentionEngine
from retention_pipelines.engine.archive.keys import ArchiveKeys
from retention_pipelines.stores.archive import LocalArchiveStore
from retention_pipelines.stores.blob import LocalBlobStore
from retention_pipelines_tests.support.properties.figures import PropertyFigures
from retention_pipelines_tests.support.properties.harness import (
    Holds,
    PropertyWorld,
    insert_row,
    move_clock,
    observe,
    present_ids,
    put_objects,
    record_uuid,
)
from retention_pipelines_tests.support.properties.model import (
    ActedOnBeforeDeadline,
    AuditMismatch,
    HeldRecordActedOn,
    ModelRow,
    RunWindow,
    Violations,
    check_act,
    check_audit,
    check_objects_gone,
    check_objects_kept,
    check_rerun,
)
from retention_pipelines_tests.support.properties.strategies import (
    BLOB_POOL,
    DAY,
    HOLD_SPELLINGS,
    HOUR,
    OFFSETS,
    PARTITION_WINDOWS,
    TIMEZONES,
    hold_spellings,
    policies,
    row_specs,
    shipped_policies,
)

MASTER_KEY = bytes(range(32))
HASH_KEY = b"property-suite-hash-key-0123456789"
UPLOADED = set(BLOB_POOL[:-1])  # a row pointing at the last key is redacted as `redacted_blob_missing`


def retention_machine(world: PropertyWorld, domain: str) -> type[RuleBasedStateMachine]:
    """The state machine of one domain's runs (its strategies depend on the table: a nullable
    subject, PDFs)."""
    nullable_subject = domain == "quiz_responses"
    subjects = st.sampled_from(["ann@example.org", "bob@example.net"] + ([None] if nullable_subject else []))
    rows_of = row_specs(subjects, blobs=domain == "meal_plans")

    class RetentionRun(RuleBasedStateMachine):
        rows = Bundle("rows")

        def __init__(self):
            super().__init__()
            self.folder = world.new_example()
            self.model: dict[str, ModelRow] = {}
            self.holds = Holds()
            self.step, self.runs = "idle", 0
            self.run: RunWindow | None = None
            self.last_complete: RunWindow | None = None  # None once anything changed after it

        # -- the world before the first run ----------------------------------------------------------
        @initialize(target=rows, choice=policies(domains=(domain,)), timezone=st.sampled_from(TIMEZONES),
                    specs=st.lists(rows_of, min_size=1, max_size=8))
        def policy_and_rows(self, choice, timezone, specs):
            self.policy = choice.build()
            self.redacting = self.policy.redact is not None
            self.database = world.database(timezone)
            self.blob_store = LocalBlobStore(self.folder / "blobs") if self.policy.blob_key_column else None
            if self.blob_store is not None:
                put_objects(self.blob_store, sorted(UPLOADED))
            keys = ArchiveKeys(self.database, MASTER_KEY, HASH_KEY) if self.policy.archive.enabled else None
            self.engine = RetentionEngine(self.policy, shipped_policies().policy_version, self.database,
                                          LocalArchiveStore(self.folder / "archive"), blob_store=self.blob_store,
                                          keys=keys)
            return multiple(*(self._write(spec) for spec in specs))

        # -- what the app and the operators do, between any two steps ------------------------------------
        @rule(target=rows, spec=rows_of)
        def app_writes_a_row(self, spec):
            return self._write(spec)

        @rule(row=rows, offset=OFFSETS)
        def app_moves_a_clock(self, row, offset):
            clock = self.database.now() - self.policy.retain_for + offset
            move_clock(self.database, self.policy, row, clock)
            self.model[row].clock = clock
            self._changed(row)

        @rule(row=rows, spelling=hold_spellings)
        def operator_places_a_hold(self, row, spelling):
            self.holds.change("add", self.policy.name, HOLD_SPELLINGS[spelling](row))
            self._changed(row)

        @rule(row=rows, spelling=hold_spellings)
        def operator_releases_a_hold(self, row, spelling):
            self.holds.change("release", self.policy.name, HOLD_SPELLINGS[spelling](row))
            self._changed(row)

        # -- the engine's steps, one at a time ---------------------------------------------------------------
        @precondition(lambda self: self.step == "idle")
        @rule(window=st.one_of(st.none(), PARTITION_WINDOWS))
        def find(self, window=None):
            """A run of the latest partition (window None), or of a partition's window of deadlines:
            ('hourly', -1) is the hour before the current UTC hour, ('daily', 0) today (UTC)."""
            self.runs += 1
            now = self.database.now()
            start = end = None
            if window is not None:
                cadence, shift = window
                unit = HOUR if cadence == "hourly" else DAY
                start = (now.replace(minute=0, second=0, microsecond=0) if cadence == "hourly"
                         else now.replace(hour=0, minute=0, second=0, microsecond=0)) + shift * unit
                end = start + unit
            self.run = RunWindow(f"run-{self.runs}", now, present_ids(self.database, self.policy), self.held, end)
            self.found = self.engine.find(start, end)
            self.step = "find"

        @precondition(lambda self: self.step == "find")
        @rule()
        def archive(self):
            self.archived = self.engine.archive(self.found, run_id=self.run.run_id)
            self.step = "archive"

        @precondition(lambda self: self.step == "archive")
        @rule()
        def act_and_audit(self):
            """The act step (delete or redact, with the audit entries), then the audit step's count."""
            run = self.run
            before = self._observe()
            run.clocks_at_act = {rid: row.clock for rid, row in self.model.items()}
            run.held_at_act, run.present_at_act = self.held, set(before.present)
            acted = self.engine.act(self.found, self.archived, run.run_id)
            audited = self.engine.audit(acted, run.run_id)
            run.now_after_act = self.database.now()
            after = self._observe()
            violations = Violations()
            check_act(violations, before, after, run, self.policy.name, self.policy.action_name, self.policy.retain_for,
                      self.redacting)
            if not audited.consistent:
                violations.add(AuditMismatch, f"run {run.run_id} acted on {audited.acted_on} records and counted "
                                              f"{audited.audit_rows} audit entries of it back")
            if self.blob_store is not None:
                redacted_now = {self.model[rid].blob for rid in run.present_at_act
                                if not before.acted(rid, True) and after.acted(rid, True) and self.model[rid].blob}
                check_objects_gone(violations, after, redacted_now & UPLOADED)
            self.step, self.last_complete = "idle", run
            # Only an object there when the act step began can be lost by it: a row the app points at
            # an object an earlier run deleted (its last other holder acted on) finds none.
            self._check_state(after, violations, before.objects)

        @precondition(lambda self: self.step == "idle" and self.last_complete is not None)
        @rule()
        def rerun(self):
            """The whole run again, nothing changed since the last one: it may act only on what
            became due since (or was written or (un)held while the last one ran)."""
            before = self.last_complete
            may_act_on = before.in_flux | {rid for rid, row in self.model.items()
                                           if row.clock + self.policy.retain_for > before.due_by}
            self.find()
            self.archive()
            self.act_and_audit()
            violations = Violations()
            check_rerun(violations, self._observe(), self.run.run_id, may_act_on)
            violations.raise_first(f"after rerun {self.run.run_id}")

        def teardown(self):
            """Every example ends the same way: the run in flight finished, a complete run if
            anything changed since the last one, and its rerun."""
            if not hasattr(self, "policy"):
                return
            if self.step == "find":
                self.archive()
            if self.step == "archive":
                self.act_and_audit()
            if self.last_complete is None:
                self.find()
                self.archive()
                self.act_and_audit()
            self.rerun()

        # ------------------------------------------------------------------------------------------------------
        @property
        def held(self) -> set[str]:
            return self.holds.of(self.policy.name)

        def _check_state(self, observed, violations, objects_before) -> None:
            """What must hold whenever no step is in flight (find and archive change no row: what
            they did shows here too): the audit log matches the rows, and no object of a row not
            acted on is gone."""
            check_audit(violations, observed, self.model, self.policy.name, self.policy.action_name, self.redacting)
            if self.blob_store is not None:
                now, held = self.database.now(), self.held
                why = {rid: HeldRecordActedOn if rid in held else
                       ActedOnBeforeDeadline if row.clock + self.policy.retain_for > now else AuditMismatch
                       for rid, row in self.model.items()}
                check_objects_kept(violations, observed, self.model, UPLOADED & set(objects_before), self.redacting,
                                   why)
            violations.raise_first(f"after the act step of {self.run.run_id}")

        def _write(self, spec) -> str:
            record_id = record_uuid(len(self.model))
            clock = self.database.now() - self.policy.retain_for + spec.offset
            insert_row(self.database, self.policy, record_id, clock, spec.subject, spec.blob)
            self.model[record_id] = ModelRow(record_id, clock, spec.subject, spec.blob)
            self._changed(record_id)
            return record_id

        def _changed(self, row: str) -> None:
            self.last_complete = None
            if self.step != "idle":
                self.run.in_flux.add(row)

        def _observe(self):
            return observe(self.database, self.policy, self.blob_store)

    return RetentionRun


@pytest.mark.parametrize("domain", ["quiz_responses", "magic_link_tokens", "meal_plans", "email_blacklist"])
def test_retention_run_properties(world, domain):
    with PropertyFigures(f"properties: retention runs of {domain}") as figures:
        machine = retention_machine(world, domain)

        def new_example():
            figures.examples += 1
            return machine()

        run_state_machine_as_test(new_example)
