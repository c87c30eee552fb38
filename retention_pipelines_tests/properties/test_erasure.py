"""Properties of an erasure request (GDPR Art. 17), found by a state machine.

The machine writes rows of every erasable domain for a subject whose address the app wrote in
many ways (case, compatibility forms, spaces around), for other people and for nobody, some meal
plans sharing a PDF; it files the request, spelled its own way, through the request API; then it
erases the domains one at a time, in a drawn order, while between any two of them an operator
places or releases holds through `retention hold`; then it completes the request, and runs the
whole erasure again. Every example ends with all of that done (`teardown`).

The model reads an address as a person would (NFKC, spaces around dropped, case ignored): the
request ends `completed` with none of the subject's rows left, or `partially_blocked` with a
manual-queue item for each one left; a held record stays whole; nobody else's rows are touched.
"""

from __future__ import annotations

from datetime import timedelta

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
from retention_pipelines.engine.gdpr.erasure_run import ErasureIncomplete, SubjectErasure
from retention_pipelines.engine.gdpr.requests import ErasureRefused, ErasureRequests
from retention_pipelines.policies import DomainPolicy
from retention_pipelines.stores.archive import LocalArchiveStore
from retention_pipelines.stores.blob import LocalBlobStore
from retention_pipelines_tests.support.properties.figures import PropertyFigures
from retention_pipelines_tests.support.properties.harness import (
    Holds,
    PropertyWorld,
    insert_row,
    observe,
    observe_all,
    put_objects,
    record_uuid,
)
from retention_pipelines_tests.support.properties.model import (
    ErasureIncompleteButClosed,
    HeldRecordActedOn,
    ModelRow,
    OtherPersonErased,
    RerunNotIdempotent,
    Violations,
    check_audit,
    subject_of,
)
from retention_pipelines_tests.support.properties.strategies import (
    BLOB_POOL,
    ERASABLE_DOMAINS,
    HOLD_SPELLINGS,
    erasure_scenarios,
    hold_spellings,
    shipped_policies,
    shown,
)

MASTER_KEY = bytes(range(64, 96))
HASH_KEY = b"property-suite-erasure-hash-key-0123"
UPLOADED = set(BLOB_POOL[:-1])  # the last key of the pool never has an object


def erasure_machine(world: PropertyWorld) -> type[RuleBasedStateMachine]:
    class ErasureRun(RuleBasedStateMachine):
        rows = Bundle("rows")

        def __init__(self):
            super().__init__()
            self.folder = world.new_example()
            self.database = world.database()
            self.holds = Holds()
            self.model: dict[str, dict[str, ModelRow]] = {domain: {} for domain in ERASABLE_DOMAINS}
            self.erased: list = []  # each domain's part, in the order erased
            self.request_id: int | None = None
            self.completed = self.rerun_done = False

        @initialize(target=rows, scenario=erasure_scenarios())
        def rows_and_request(self, scenario):
            self.scenario = scenario
            self.subject = subject_of(scenario.subject)
            self.policies: dict[str, DomainPolicy] = {
                name: DomainPolicy.model_validate({
                    **shipped_policies().domains[name].model_dump(), "batch_size": scenario.batch_size,
                    "parallel_batches": scenario.parallel_batches,
                    "pacing": {"batch_target_ms": None, "sleep_coefficient": 0}})
                for name in ERASABLE_DOMAINS}
            self.blob_store = LocalBlobStore(self.folder / "blobs")
            put_objects(self.blob_store, sorted(UPLOADED))
            archive_store = LocalArchiveStore(self.folder / "archive")
            keys = ArchiveKeys(self.database, MASTER_KEY, HASH_KEY)
            version = shipped_policies().policy_version
            self.engines = {name: RetentionEngine(policy, version, self.database, archive_store,
                                                  blob_store=self.blob_store if policy.blob_key_column else None,
                                                  keys=keys if policy.archive.enabled else None)
                            for name, policy in self.policies.items()}
            self.requests = ErasureRequests(self.database, HASH_KEY, timedelta(days=30))
            self.erasure = SubjectErasure(self.requests, keys, archive_store, version, list(self.policies.values()))
            written = []
            now = self.database.now()
            for index, row in enumerate(scenario.rows):
                record_id, clock = record_uuid(index), now - row.age
                insert_row(self.database, self.policies[row.domain], record_id, clock, row.address.text, row.blob)
                self.model[row.domain][record_id] = ModelRow(record_id, clock, row.address.text, row.blob)
                written.append((row.domain, record_id))
            try:
                self.request_id = self.requests.request(scenario.requested).id
            except ErasureRefused:
                pass  # the request API refused the spelling: nothing to erase, no invariant to check
            return multiple(*written)

        # -- an operator, between any two domains ------------------------------------------------------
        @rule(row=rows, spelling=hold_spellings)
        def operator_places_a_hold(self, row, spelling):
            self.holds.change("add", row[0], HOLD_SPELLINGS[spelling](row[1]))

        @rule(row=rows, spelling=hold_spellings)
        def operator_releases_a_hold(self, row, spelling):
            self.holds.change("release", row[0], HOLD_SPELLINGS[spelling](row[1]))

        # -- the erasure run: each domain, then the request ------------------------------------------------
        @precondition(lambda self: self.request_id is not None and len(self.erased) < len(ERASABLE_DOMAINS))
        @rule()
        def erase_next_domain(self):
            domain = self.scenario.order[len(self.erased)]
            policy = self.policies[domain]
            held = self.holds.of(domain)
            before = self._observe(domain)
            self.erased.append(self.erasure.erase_domain(self.engines[domain], self.request_id, "erasure"))
            after = self._observe(domain)
            violations = Violations()
            check_audit(violations, after, self.model[domain], domain, policy.action_name, policy.redact is not None)
            for record_id, row in before.present.items():
                now = after.present.get(record_id)
                kept = row["blob"] not in UPLOADED or row["blob"] in after.objects
                change = f"{row} -> {now}, its object {'kept' if kept else 'gone'}"
                if now == row and kept:
                    continue
                if record_id in held and subject_of(row["subject"]) == self.subject:
                    violations.add(HeldRecordActedOn, f"{domain} record {record_id}, held, was erased: {change}")
                elif subject_of(row["subject"]) != self.subject:
                    whose = f"of {shown(row['subject'])}, not the subject {shown(self.scenario.requested)}"
                    violations.add(OtherPersonErased, f"{domain} record {record_id} {whose}, changed: {change}")
            violations.raise_first(f"after erasing {domain}")

        @precondition(lambda self: len(self.erased) == len(ERASABLE_DOMAINS) and not self.completed)
        @rule()
        def complete_the_request(self):
            self.completed = True
            try:
                self.erasure.complete(self.request_id, self.erased, "erasure")
            except ErasureIncomplete:
                pass  # the request stays open: what is left must be in a person's hands (below)
            request = self.requests.get(self.request_id)
            observed = self._observe_all()
            left = [(domain, record_id, shown(row["subject"])) for domain, seen in observed.items()
                    for record_id, row in seen.present.items() if subject_of(row["subject"]) == self.subject]
            violations = Violations()
            if request.status == "completed" and left:
                rows = "; ".join(f"{domain} {record_id} {address}" for domain, record_id, address in left)
                violations.add(ErasureIncompleteButClosed, f"request {shown(self.scenario.requested)} is completed, "
                                                           f"yet {len(left)} rows still name the subject: {rows}")
            # A record its policy keeps until its deadline (on_erasure: keep_until_deadline) is named,
            # with that deadline, in the request itself: no person has anything to do about it.
            kept = {(k.domain, record_id): k.until for k in request.kept_by_policy for record_id in k.record_ids}
            now = self.database.now()
            for domain, record_id, _ in left:
                if request.status == "completed" or observed[domain].queued.get(record_id):
                    continue
                if (domain, record_id) not in kept:
                    violations.add(ErasureIncompleteButClosed,
                                   f"request is {request.status}; {domain} record {record_id} still names the "
                                   f"subject with no manual-queue item or kept-by-policy entry saying why")
                elif self.policies[domain].on_erasure != "keep_until_deadline" or kept[(domain, record_id)] <= now:
                    violations.add(ErasureIncompleteButClosed,
                                   f"request is {request.status}; {domain} record {record_id} is said to be kept by "
                                   f"its policy until {kept[(domain, record_id)]}, which the policy or the clock "
                                   "does not bear out")
            violations.raise_first(f"after completing the request ({request.status})")

        @precondition(lambda self: self.completed and not self.rerun_done)
        @rule()
        def rerun(self):
            self.rerun_done = True
            status = self.requests.get(self.request_id).status
            parts = [self.erasure.erase_domain(self.engines[domain], self.request_id, "erasure-rerun")
                     for domain in ERASABLE_DOMAINS]
            try:
                self.erasure.complete(self.request_id, parts, "erasure-rerun")
            except ErasureIncomplete:
                pass
            violations = Violations()
            audit_log = self._observe_all()["quiz_responses"].audit  # every domain's entries
            again = [e for e in audit_log if e["run_id"] == "erasure-rerun"]
            for entry in again:
                violations.add(RerunNotIdempotent, f"the rerun wrote a {entry['action']!r} audit entry for "
                                                   f"{entry['domain']} record {entry['record_id']}")
            if self.requests.get(self.request_id).status != status:
                violations.add(RerunNotIdempotent, f"the rerun changed the request from {status} to "
                                                   f"{self.requests.get(self.request_id).status}")
            violations.raise_first("after rerunning the erasure")

        def teardown(self):
            """Every example ends the same way: the domains left erased, the request completed,
            the whole erasure run again."""
            if self.request_id is None:
                return
            while len(self.erased) < len(ERASABLE_DOMAINS):
                self.erase_next_domain()
            if not self.completed:
                self.complete_the_request()
            if not self.rerun_done:
                self.rerun()

        # ------------------------------------------------------------------------------------------------
        def _observe(self, domain: str):
            return observe(self.database, self.policies[domain],
                           self.blob_store if self.policies[domain].blob_key_column else None)

        def _observe_all(self):
            return observe_all(self.database, self.policies, self.blob_store)

    return ErasureRun


def test_erasure_request_properties(world):
    with PropertyFigures("properties: erasure requests") as figures:
        machine = erasure_machine(world)

        def new_example():
            figures.examples += 1
            return machine()

        run_state_machine_as_test(new_example)
