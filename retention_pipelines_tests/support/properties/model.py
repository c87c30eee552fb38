"""The property suite's model: what must be gone and what must stay, from what the test did and
what it saw, and the invariants that compare it with what the database and the stores hold.

The model is deliberately naive. It knows each row the test wrote (its clock as last written, its
subject, its PDF's key), which holds the hold API reports as active, and the database's clock read
around each step. Nothing of the engine is reused here: a record id is read with `uuid.UUID`, an
address with NFKC + strip + lower, a deadline is the clock plus the exact period.

Each invariant has its own exception class, so that Hypothesis tells them apart, shrinks each to
its own minimal example and reports every one of them.
"""

from __future__ import annotations

import unicodedata
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from retention_pipelines.engine.audit.entries import ACTED_ACTIONS


# -- the invariants ---------------------------------------------------------------------------------
class InvariantViolated(AssertionError):
    """An invariant of retention does not hold; `invariant` names it in the report."""

    invariant = "invariant"


class HeldRecordActedOn(InvariantViolated):
    invariant = "a held record is never removed or redacted, its object never deleted"


class ActedOnBeforeDeadline(InvariantViolated):
    invariant = "nothing is acted on before its deadline (clock + retain_for, by the database's clock)"


class DueRecordLeft(InvariantViolated):
    invariant = "everything due and not held is acted on by the run (or queued for a person, with a reason)"


class AuditMismatch(InvariantViolated):
    invariant = "exactly one audit entry per record acted on, with its exact deadline; none for a record not acted on"


class ErasureIncompleteButClosed(InvariantViolated):
    invariant = ("an erasure request ends completed with none of the subject's rows left, or partially_blocked "
                 "with a reason for each record left")


class OtherPersonErased(InvariantViolated):
    invariant = "an erasure acts on the subject's records only"


class RerunNotIdempotent(InvariantViolated):
    invariant = "a rerun after a complete run does nothing"


ORDER = (HeldRecordActedOn, OtherPersonErased, ActedOnBeforeDeadline, AuditMismatch, ErasureIncompleteButClosed,
         DueRecordLeft, RerunNotIdempotent)


@dataclass
class Violations:
    """What a check found: (invariant, what) pairs; `raise_first` raises the most serious one's
    class with every finding listed in its message."""

    found: list[tuple[type[InvariantViolated], str]] = field(default_factory=list)

    def add(self, kind: type[InvariantViolated], what: str) -> None:
        self.found.append((kind, what))

    def raise_first(self, when: str) -> None:
        if not self.found:
            return
        kinds = sorted({kind for kind, _ in self.found}, key=ORDER.index)
        lines = [f"INVARIANT VIOLATED {when}: {kinds[0].invariant}"]
        for kind in kinds:
            lines.append(f"  [{kind.invariant}]")
            lines += [f"    - {what}" for k, what in self.found if k is kind][:8]
        raise kinds[0]("\n".join(lines))


# -- how the test reads ids and addresses ------------------------------------------------------------
def record_of(text: str | None) -> str | None:
    """The record a hold or queue item names, as a person reads it: any spelling of a uuid
    (case, hyphens, braces, urn:uuid:, spaces around) is that uuid; anything else names nothing."""
    try:
        return str(uuid.UUID((text or "").strip()))
    except ValueError:
        return None


def subject_of(address: str | None) -> str | None:
    """Who an address names: compatibility forms folded (NFKC), spaces around dropped, case ignored."""
    if address is None:
        return None
    return unicodedata.normalize("NFKC", address).strip().lower()


# -- what the test knows and saw -------------------------------------------------------------------------
@dataclass
class ModelRow:
    record_id: str
    clock: datetime  # as the test last wrote it (aware, UTC)
    subject: str | None
    blob: str | None = None


@dataclass(frozen=True)
class Observed:
    """The database and the stores at one instant."""

    present: dict[str, dict]  # record id -> {"clock", "subject", "blob", "redacted"} of each row still there
    audit: list[dict]  # every audit entry (domain, record_id, action, run_id, occurred_at, deadline)
    objects: set[str]  # keys in the hot blob store
    queued: dict[str, set[str]]  # record id -> reasons of its open or claimed manual-queue items

    def acted(self, record_id: str, redacting: bool) -> bool:
        """Gone, or (a redacting domain) redacted."""
        row = self.present.get(record_id)
        return row is None or (redacting and row["redacted"])


def acted_entries(observed: Observed, domain: str, action: str) -> Counter:
    actions = set(ACTED_ACTIONS[action]) | {"erased"}
    return Counter(e["record_id"] for e in observed.audit if e["domain"] == domain and e["action"] in actions)


def check_audit(violations: Violations, observed: Observed, rows: dict[str, ModelRow], domain: str, action: str,
                redacting: bool) -> None:
    """Exactly one acted-on audit entry per record acted on, none for a record not acted on (checked
    between steps, so also never one without the other between two transactions)."""
    counts = acted_entries(observed, domain, action)
    for record_id in rows:
        done, entries = observed.acted(record_id, redacting), counts.get(record_id, 0)
        if done and entries != 1:
            violations.add(AuditMismatch, f"{domain} record {record_id} was acted on with {entries} audit entries")
        if not done and entries:
            violations.add(AuditMismatch, f"{domain} record {record_id} is still there with {entries} audit "
                                          "entries saying it was acted on")


def check_objects_kept(violations: Violations, observed: Observed, rows: dict[str, ModelRow], uploaded: set[str],
                       redacting: bool, why: dict[str, type[InvariantViolated]]) -> None:
    """The object of every row still holding its key stays (an object shared with a row acted on
    too). `why`: which invariant a lost object breaks, by record (a held one, a young one)."""
    for record_id, row in rows.items():
        if observed.acted(record_id, redacting):
            continue
        key = observed.present[record_id]["blob"]
        if key in uploaded and key not in observed.objects:
            kind = why.get(record_id, ActedOnBeforeDeadline)
            violations.add(kind, f"object {key!r} of record {record_id} (not acted on) was deleted")


def check_objects_gone(violations: Violations, observed: Observed, redacted_keys: set[str]) -> None:
    """An object no row points at any more, after its rows were redacted, is gone from hot storage."""
    still_pointed_at = {row["blob"] for row in observed.present.values() if row["blob"]}
    for key in sorted(redacted_keys - still_pointed_at):
        if key in observed.objects:
            violations.add(DueRecordLeft, f"object {key!r}: every row pointing at it was redacted, the object stays")


@dataclass
class RunWindow:
    """One run as the model follows it: the database's clock around it, the rows touched by the
    app or an operator while it ran, the holds at its act step."""

    run_id: str
    now_before_find: datetime
    present_at_find: set[str]
    held_at_find: set[str]
    window_end: datetime | None = None  # the partition's window: what is due after its end waits
    in_flux: set[str] = field(default_factory=set)  # written, moved or (un)held between its steps
    clocks_at_act: dict[str, datetime] = field(default_factory=dict)
    held_at_act: set[str] = field(default_factory=set)
    present_at_act: set[str] = field(default_factory=set)
    now_after_act: datetime | None = None

    @property
    def due_by(self) -> datetime:
        """Everything whose deadline is at or before this had to be acted on."""
        return min(self.now_before_find, self.window_end or self.now_before_find)


def check_act(violations: Violations, before: Observed, after: Observed, run: RunWindow, domain: str, action: str,
              retain_for: timedelta, redacting: bool) -> None:
    """What one act step did to the rows, against what it had to do and what it must not do (the
    objects: check_objects_kept and check_objects_gone)."""
    deadlines = {rid: clock + retain_for for rid, clock in run.clocks_at_act.items()}
    newly = {rid for rid in run.present_at_act if not before.acted(rid, redacting) and after.acted(rid, redacting)}
    entries = {e["record_id"]: e for e in after.audit if e["run_id"] == run.run_id and e["domain"] == domain
               and e["action"] in ACTED_ACTIONS[action]}
    for rid in sorted(newly & run.held_at_act):
        violations.add(HeldRecordActedOn, f"{domain} record {rid} was {action} by run {run.run_id} while the hold "
                                          "API listed it as held")
    for rid in sorted(newly):
        deadline = deadlines[rid]
        if deadline > run.now_after_act:
            violations.add(ActedOnBeforeDeadline, f"{domain} record {rid} was {action} before its deadline "
                                                  f"{deadline.isoformat()} (the act step ended at "
                                                  f"{run.now_after_act.isoformat()})")
        entry = entries.get(rid)
        if entry is not None and entry["occurred_at"] < deadline:
            violations.add(ActedOnBeforeDeadline, f"{domain} record {rid} was {action} at "
                                                  f"{entry['occurred_at'].isoformat()}, before its deadline "
                                                  f"{deadline.isoformat()}")
        if entry is not None and entry["deadline"] != deadline:
            violations.add(AuditMismatch, f"{domain} record {rid}: the audit entry says its deadline was "
                                          f"{entry['deadline'].isoformat()}, clock + retain_for is "
                                          f"{deadline.isoformat()}")
    must = {rid for rid in run.present_at_find & run.present_at_act
            if rid not in run.in_flux and rid not in run.held_at_find and rid not in run.held_at_act
            and not before.acted(rid, redacting) and deadlines[rid] <= run.due_by}
    for rid in sorted(must):
        if not after.acted(rid, redacting) and not after.queued.get(rid):
            violations.add(DueRecordLeft, f"{domain} record {rid}, due at {deadlines[rid].isoformat()} and not held, "
                                          f"is still there after run {run.run_id} (everything due by "
                                          f"{run.due_by.isoformat()}), with no manual-queue item")


def check_rerun(violations: Violations, after: Observed, run_id: str, may_act_on: set[str]) -> None:
    """A rerun writes no audit entry, except for what became due (or was written) since the complete
    run before it."""
    for entry in after.audit:
        if entry["run_id"] == run_id and entry["record_id"] not in may_act_on:
            violations.add(RerunNotIdempotent, f"rerun {run_id} wrote a {entry['action']!r} audit entry for "
                                               f"{entry['domain']} record {entry['record_id']}, which the complete "
                                               "run before it had already done or had to do")
