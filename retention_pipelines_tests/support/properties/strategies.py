"""Generators of the property suite (Hypothesis): policies, rows around their deadlines, the ways
an operator may spell a record id, the ways the app may have written an address.

Everything drawn here is plain data with a short repr, so that a falsifying example printed by
Hypothesis reads as a story: which policy, which rows, which hold spelled how, in which order.
"""

from __future__ import annotations

import functools
import unicodedata
from dataclasses import dataclass
from datetime import timedelta

from hypothesis import strategies as st

from retention_pipelines.policies import DomainPolicy, load_policies

SECOND, MINUTE, HOUR, DAY = timedelta(seconds=1), timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)
MICROSECOND = timedelta(microseconds=1)

# Time zones the database's sessions may run in: production databases are not always set to UTC,
# and two of these change their clocks inside the periods the policies keep rows for.
TIMEZONES = ("UTC", "America/New_York", "Europe/Berlin", "Australia/Lord_Howe", "Asia/Kathmandu")


def duration_text(value: timedelta) -> str:
    """-1d 02:00:00.000001 → '-1d2h0.000001s': short, exact, signed."""
    sign, value = ("-", -value) if value < timedelta(0) else ("+", value)
    days, rest = divmod(value, DAY)
    hours, rest = divmod(rest, HOUR)
    minutes, rest = divmod(rest, MINUTE)
    seconds = rest.total_seconds()
    parts = [f"{days}d" if days else "", f"{hours}h" if hours else "", f"{minutes}m" if minutes else "",
             (f"{seconds:g}s" if rest else "")]
    return sign + ("".join(parts) or "0s")


@functools.cache
def shipped_policies():
    return load_policies()


class ShortRepr:
    """Hypothesis prints a dataclass field by field; these print their own short repr instead."""

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(repr(self))


# -- policies -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PolicyChoice(ShortRepr):
    """A variation of one shipped domain's policy; `build()` validates it as the loader would."""

    domain: str
    action: str  # "delete" or "redact"
    blobs: bool  # meal_plans: the PDF in object storage goes with the row
    archive: bool
    retain_for: timedelta
    batch_size: int
    parallel_batches: int

    def build(self) -> DomainPolicy:
        shipped = shipped_policies().domains[self.domain].model_dump()
        shipped.update(retain_for=self.retain_for, batch_size=self.batch_size, parallel_batches=self.parallel_batches,
                       # Batches keep their size and nobody sleeps: small batches are the point here.
                       pacing={"batch_target_ms": None, "sleep_coefficient": 0})
        shipped["archive"] = {**shipped["archive"], "enabled": self.archive, "keep_for": timedelta(days=365)}
        if self.action == "delete":
            shipped["action"] = "delete"
        if not self.blobs:
            shipped["blob_key_column"] = None
        return DomainPolicy.model_validate(shipped)

    def __repr__(self) -> str:
        extras = ("+pdfs" if self.blobs else "") + ("+archive" if self.archive else "")
        return (f"PolicyChoice({self.domain} {self.action}{extras}, retain_for={duration_text(self.retain_for)[1:]}, "
                f"batch_size={self.batch_size}, parallel_batches={self.parallel_batches})")


# Periods that matter: the shipped ones, one crossing a change of daylight-saving time, the edges.
NAMED_PERIODS = (SECOND, MINUTE, HOUR, DAY, 2 * DAY, 30 * DAY, 90 * DAY, 100 * DAY, 400 * DAY)


def retention_periods(zero_allowed: bool, floor: timedelta = timedelta(0)) -> st.SearchStrategy[timedelta]:
    periods = st.one_of(st.sampled_from(NAMED_PERIODS),
                        st.integers(1, 10 * 86400).map(lambda s: timedelta(seconds=s)))
    if zero_allowed:
        periods = st.one_of(st.just(timedelta(0)), periods)
    return periods.map(lambda p: max(p, floor))


@st.composite
def policies(draw, domains=("quiz_responses", "magic_link_tokens", "meal_plans", "email_blacklist")) -> PolicyChoice:
    domain = draw(st.sampled_from(domains))
    action, blobs, archive = "delete", False, draw(st.booleans())
    if domain == "meal_plans":
        action = draw(st.sampled_from(["redact", "delete"]))
        blobs = action == "redact" and draw(st.booleans())
        archive = archive or blobs  # objects are archived before they go
    floor = timedelta(days=90) if domain == "email_blacklist" else timedelta(0)
    retain_for = draw(retention_periods(zero_allowed=domain == "magic_link_tokens", floor=floor))
    return PolicyChoice(domain, action, blobs, archive, retain_for, batch_size=draw(st.integers(1, 50)),
                        parallel_batches=draw(st.integers(1, 3)))


# -- rows -----------------------------------------------------------------------------------------
# Where a row's deadline lies from the database's now when it is written: exactly on it, a tick
# either side, minutes and hours either side.
OFFSETS = st.one_of(
    st.sampled_from([timedelta(0), MICROSECOND, -MICROSECOND, SECOND, -SECOND, -MINUTE, 2 * MINUTE, -HOUR, 3 * HOUR]),
    st.integers(-3 * 3600 * 10**6, 3 * 3600 * 10**6).map(lambda us: timedelta(microseconds=us)),
)

# A partition's window of deadlines (UTC hours or days): ('hourly', -1) is the hour before the current one.
PARTITION_WINDOWS = st.tuples(st.sampled_from(["hourly", "daily"]), st.integers(-2, 1))

# Few keys, so that rows share them; the last one is never uploaded (a row pointing at no object).
BLOB_POOL = ("plans/a.pdf", "plans/b.pdf", "plans/never-uploaded.pdf")
# Half of the meal plans point at the first key: two of them in an example share it more often than not.
blob_keys = st.one_of(st.just(BLOB_POOL[0]), st.sampled_from((*BLOB_POOL[1:], None)))


@dataclass(frozen=True)
class RowSpec(ShortRepr):
    """A row of the domain's table: its deadline `offset` from the database's now when written
    (negative: already past it), its subject column, its PDF's key in the blob store."""

    offset: timedelta
    subject: str | None
    blob: str | None = None

    def __repr__(self) -> str:
        blob = f", blob={self.blob!r}" if self.blob else ""
        return f"RowSpec(deadline now{duration_text(self.offset)}, subject={self.subject!r}{blob})"


@st.composite
def row_specs(draw, subjects: st.SearchStrategy[str | None] | None = None, blobs: bool = False) -> RowSpec:
    subject = draw(subjects if subjects is not None else st.sampled_from(["ann@example.org", "bob@example.net"]))
    blob = draw(blob_keys) if blobs else None
    return RowSpec(draw(OFFSETS), subject, blob)


# -- record ids as an operator may type them --------------------------------------------------------
HOLD_SPELLINGS = {
    "canonical": lambda rid: rid,
    "upper": str.upper,
    "no hyphens": lambda rid: rid.replace("-", ""),
    "braces": lambda rid: "{" + rid + "}",
    "braces upper": lambda rid: "{" + rid.upper() + "}",
    "spaces around": lambda rid: f"  {rid}\t",
    "urn": lambda rid: f"urn:uuid:{rid}",
}
hold_spellings = st.sampled_from(sorted(HOLD_SPELLINGS))


# -- addresses as the app may have written them ------------------------------------------------------
SUBJECTS = ("ann.subject@example.org", "zoë.müller@exämple.org")
# Not the subject: other people, and addresses that only look alike.
OTHERS = ("bob.other@example.net", "ann.subject@example.org.uk", "xann.subject@example.org", "zoe.muller@example.org")
SPACES = ("", " ", "\t", "\u00a0", "\u2009", "\u2003", "\u3000")  # all of them str.isspace()


def shown(text: str | None) -> str:
    """repr() with combining marks escaped too, as repr() escapes Unicode spaces: an address
    written decomposed (NFD) prints apart from its composed twin."""
    if text is None:
        return "NULL"
    return "".join(f"\\u{ord(c):04x}" if unicodedata.category(c).startswith("M") else c for c in repr(text))


def fullwidth(char: str) -> str:
    """The fullwidth form of an ASCII letter or digit (U+FF01…): NFKC maps it back."""
    return chr(ord(char) - 0x21 + 0xFF01) if char.isascii() and char.isalnum() else char


@dataclass(frozen=True)
class Spelling(ShortRepr):
    """One way of writing an address: case, compatibility forms (NFKC), spaces around."""

    case: str  # "as is", "lower", "upper", "title", "mixed"
    fullwidth_at: tuple[int, ...] = ()  # positions of letters written fullwidth
    decomposed: bool = False  # accents as combining characters (NFD)
    before: str = ""
    after: str = ""

    def write(self, address: str) -> str:
        text = {"as is": address, "lower": address.lower(), "upper": address.upper(), "title": address.title(),
                "mixed": "".join(c.upper() if i % 2 else c for i, c in enumerate(address))}[self.case]
        chars = list(text)
        for position in self.fullwidth_at:
            if position < len(chars):
                chars[position] = fullwidth(chars[position])
        text = "".join(chars)
        if self.decomposed:
            text = unicodedata.normalize("NFD", text)
        return self.before + text + self.after


spellings = st.builds(Spelling, case=st.sampled_from(["as is", "lower", "upper", "title", "mixed"]),
                      fullwidth_at=st.lists(st.integers(0, 8), max_size=2, unique=True).map(tuple),
                      decomposed=st.booleans(), before=st.sampled_from(SPACES), after=st.sampled_from(SPACES))


@dataclass(frozen=True)
class Address(ShortRepr):
    """Whose address a row holds (`who`: a subject, another person, or NULL) and how it is written."""

    who: str | None
    spelling: Spelling = Spelling("as is")

    @property
    def text(self) -> str | None:
        return None if self.who is None else self.spelling.write(self.who)

    def __repr__(self) -> str:
        return shown(self.text)


def addresses(subject: str, null: bool = True) -> st.SearchStrategy[Address]:
    people = st.one_of(st.just(subject), st.sampled_from(OTHERS))
    written = st.builds(Address, people, spellings)
    return st.one_of(written, st.just(Address(None))) if null else written


# -- erasure requests --------------------------------------------------------------------------------
ERASABLE_DOMAINS = ("quiz_responses", "magic_link_tokens", "meal_plans", "email_blacklist")


@dataclass(frozen=True)
class ErasureRow(ShortRepr):
    """A row of an erasable domain: whose address, written how; how old; its PDF's key."""

    domain: str
    address: Address
    age: timedelta
    blob: str | None = None

    def __repr__(self) -> str:
        blob = f", blob={self.blob!r}" if self.blob else ""
        return f"ErasureRow({self.domain}, {self.address!r}, {duration_text(self.age)[1:]} old{blob})"


@dataclass(frozen=True)
class ErasureScenario(ShortRepr):
    """Whose erasure is requested, spelled how; the rows of every domain; the run's batches and
    the order the domains are erased in."""

    subject: str
    request: Spelling
    rows: tuple[ErasureRow, ...]
    batch_size: int
    parallel_batches: int
    order: tuple[str, ...]

    @property
    def requested(self) -> str:
        return self.request.write(self.subject)

    def __repr__(self) -> str:
        rows = "".join(f"\n    {row!r}," for row in self.rows)
        return (f"ErasureScenario(request for {shown(self.requested)}, batch_size={self.batch_size}, "
                f"parallel_batches={self.parallel_batches}, order={self.order}, rows=[{rows}])")


@st.composite
def erasure_rows(draw, subject: str, domain: str) -> ErasureRow:
    address = draw(addresses(subject, null=domain == "quiz_responses"))
    blob = draw(blob_keys) if domain == "meal_plans" else None
    return ErasureRow(domain, address, draw(st.sampled_from([HOUR, 2 * DAY, 100 * DAY])), blob)


@st.composite
def erasure_scenarios(draw) -> ErasureScenario:
    subject = draw(st.sampled_from(SUBJECTS))
    # Up to three rows in each domain: two meal plans of different people share a PDF often enough.
    rows = [row for domain in ERASABLE_DOMAINS for row in draw(st.lists(erasure_rows(subject, domain), max_size=3))]
    if not rows:  # an operator needs a row to hold
        rows = [draw(erasure_rows(subject, draw(st.sampled_from(ERASABLE_DOMAINS))))]
    return ErasureScenario(subject, draw(spellings), tuple(rows), draw(st.integers(1, 50)), draw(st.integers(1, 3)),
                           tuple(draw(st.permutations(ERASABLE_DOMAINS))))
