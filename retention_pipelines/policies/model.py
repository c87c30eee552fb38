"""The policy file's model: what a retention domain is, validated before anything runs."""

from __future__ import annotations

import functools
import re
import zoneinfo
from datetime import date, timedelta
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, PrivateAttr, Tag, field_validator, model_validator

# Identifiers are interpolated into SQL by SQLAlchemy's quoting, but a policy file is input
# like any other: only plain lower-case SQL identifiers are accepted, so that no policy can
# smuggle SQL, and so that names read the same in PostgreSQL and SQLite.
IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
DURATION = re.compile(r"^(\d+)([smhd])$")
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}  # seconds in each unit
# The longest period a policy may give. Statutory retention and archive periods run to decades at
# most, nowhere near a century; and a century keeps every date computed from one (now ± retain_for,
# a partition's start − retain_for, now + keep_for for an Object Lock) far inside what Python's
# datetime (years 1 to 9999) and PostgreSQL's timestamps hold, where 10**12 days would not even
# be a timedelta.
MAX_DURATION = timedelta(days=36_500)
# The dates a policy may name (a domain's first partition): the years this tool's reports cover
# (`month_bounds`), with a century of margin to datetime's limits for any period subtracted.
FIRST_DATE, LAST_DATE = date(2000, 1, 1), date(2999, 12, 31)

# Prefixes of the archive store that hold no domain's archives (audit anchors, compliance reports,
# the health probe): an archived domain of one of these names would hand them to its expiry job.
RESERVED_ARCHIVE_PREFIXES = frozenset({"audit_anchors", "reports", "_health"})


def parse_duration(value: object) -> timedelta:
    """'90d', '24h', '30m', '0s' → timedelta, up to MAX_DURATION; anything else is refused with
    the accepted form."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    else:
        match = DURATION.match(value.strip()) if isinstance(value, str) else None
        if not match:
            raise ValueError(f"{value!r} is not a duration: write a whole number and a unit, e.g. '24h', '90d', "
                             "'30m'")
        digits, unit = match.groups()
        # Counted in seconds before any timedelta is made, which would overflow past 999999999 days.
        seconds = int(digits) * DURATION_UNITS[unit] if len(digits) <= 15 else float("inf")
    if seconds > MAX_DURATION.total_seconds():
        raise ValueError(f"{value!r} is longer than {format_duration(MAX_DURATION)} (100 years), the longest "
                         "period a policy may give")
    return value if isinstance(value, timedelta) else timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """A duration in the policy file's units, the largest that divides it: 86400 s → '1d', 7200 s → '2h'."""
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@functools.cache
def _zone_names() -> frozenset[str]:
    # Names only: zoneinfo.ZoneInfo would also open a key that is a path, and PostgreSQL knows the
    # IANA names, not abbreviations or offsets spelt as names.
    return frozenset(zoneinfo.available_timezones())


def identifier(value: str) -> str:
    if not isinstance(value, str) or not IDENTIFIER.match(value):
        raise ValueError(f"{value!r} is not a plain SQL identifier (lower-case letters, digits and _)")
    return value


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Redact(StrictModel):
    null_columns: list[str] = Field(min_length=1)
    stamp_column: str

    _names = field_validator("null_columns")(lambda cls, v: [identifier(c) for c in v])
    _stamp = field_validator("stamp_column")(lambda cls, v: identifier(v))


class RedactAction(StrictModel):
    redact: Redact


class Archive(StrictModel):
    enabled: bool = False
    exclude_columns: list[str] = []
    # How long each archive object lives after it was written (the store's own timestamp): the
    # daily archive expiry job deletes it then, and an S3 Object Lock (where configured) keeps it
    # until then. Required for an archived domain: either default would be wrong for some domain
    # (kept too long is a breach of storage limitation, too short of a legal duty to keep).
    keep_for: timedelta | None = None

    _names = field_validator("exclude_columns")(lambda cls, v: [identifier(c) for c in v])
    _keep = field_validator("keep_for", mode="before")(lambda cls, v: None if v is None else parse_duration(v))

    @field_validator("keep_for")
    @classmethod
    def _keep_positive(cls, v: timedelta | None) -> timedelta | None:
        if v is not None and v <= timedelta(0):
            raise ValueError("must be longer than zero")
        return v

    @model_validator(mode="after")
    def _keep_for_when_archived(self) -> Archive:
        if self.enabled and self.keep_for is None:
            raise ValueError("archive.keep_for is required when archive.enabled is true: how long each archive "
                             "object is kept before the archive expiry job deletes it, e.g. keep_for: 365d")
        return self


class Partitions(StrictModel):
    cadence: Literal["hourly", "daily"]
    start: date

    @field_validator("start")
    @classmethod
    def _sane_date(cls, v: date) -> date:
        if not FIRST_DATE <= v <= LAST_DATE:
            raise ValueError(f"must be a date from {FIRST_DATE} to {LAST_DATE}")
        return v


class Schedule(StrictModel):
    minute_of_hour: int = Field(default=0, ge=0, le=59)
    hour_of_day: int | None = Field(default=None, ge=0, le=23)


DEFAULT_ESCALATE_AT = (2.0, 4.0)
MAX_ESCALATION = 100.0


def escalation_level(observed: float, limit: float, escalate_at=DEFAULT_ESCALATE_AT) -> int:
    """1 for a breach just over its limit, one more for each multiple in escalate_at reached."""
    return 1 + sum(observed >= multiple * limit for multiple in escalate_at)


class Sla(StrictModel):
    max_lag: timedelta
    max_run_duration: timedelta
    # The failure sensor reads this many runs back, times the highest escalate_at multiple: a
    # bounded query, and hundreds of failures in a row are no service level any more.
    max_consecutive_failures: int = Field(default=3, ge=1, le=100)
    # An open breach escalates (alerting again, at a higher level) when what it observes reaches
    # these multiples of its limit: by default level 2 at twice the limit, level 3 at four times.
    escalate_at: list[float] = Field(default=list(DEFAULT_ESCALATE_AT), max_length=5)
    # How long a person has to resolve what automation could not finish (a manual-queue item's
    # due date); its escalations follow escalate_at, as multiples of this time.
    resolve_within: timedelta = timedelta(days=2)

    _durations = field_validator("max_lag", "max_run_duration", "resolve_within", mode="before")(
        lambda cls, v: parse_duration(v)
    )

    @field_validator("max_run_duration", "resolve_within")
    @classmethod
    def _positive(cls, v: timedelta) -> timedelta:
        if v <= timedelta(0):
            raise ValueError("must be longer than zero")
        return v

    @field_validator("escalate_at")
    @classmethod
    def _rising_multiples(cls, v: list[float]) -> list[float]:
        # At most 100: a multiple of a period (resolve_within) must stay a timedelta, and not NaN.
        if any(not 1 < m <= MAX_ESCALATION for m in v) or any(b <= a for a, b in zip(v, v[1:])):
            raise ValueError(f"must be rising multiples of the limit, each above 1 and at most {MAX_ESCALATION:g} "
                             "(e.g. [2, 4])")
        return v

    def escalation_level(self, observed: float, limit: float) -> int:
        return escalation_level(observed, limit, self.escalate_at)


class Pacing(StrictModel):
    """Batch sizes and pauses (engine/retention/pacing.py): each batch transaction aims at batch_target_ms
    (none: the policy's batch_size, always);
    while at least busy_sessions of the app's sessions were at work in the last second, each
    worker rests sleep_coefficient × its last batch's time after it (0: never)."""

    batch_target_ms: int | None = Field(default=100, ge=10, le=10_000)  # None: every batch batch_size rows
    min_batch_size: int = Field(default=500, ge=1, le=100_000)
    sleep_coefficient: float = Field(default=3.0, ge=0, le=100)
    busy_sessions: int = Field(default=1, ge=1)


# The record of processing's vocabulary, each word with the point of the article that names it, so
# that a schedule can cite the law ("Art. 6(1)(b) contract") from a word a person can type.
# GDPR Art. 6(1): the lawful bases of any processing.
ARTICLE_6 = {"consent": "a", "contract": "b", "legal_obligation": "c", "vital_interests": "d", "public_task": "e",
             "legitimate_interests": "f"}
# GDPR Art. 9(2): the conditions that lift the ban on processing special categories of data (health
# data among them), needed besides an Art. 6(1) basis.
ARTICLE_9 = {"explicit_consent": "a", "employment_and_social_security": "b", "vital_interests": "c",
             "not_for_profit_body": "d", "made_public_by_the_subject": "e", "legal_claims": "f",
             "substantial_public_interest": "g", "health_or_social_care": "h", "public_health": "i",
             "archiving_research_or_statistics": "j"}
# Bases that are only complete with words of their own: the interest pursued (Art. 13(1)(d)) or
# the law that imposes the obligation (Art. 6(3)).
EXPLAINED_BASES = ("legal_obligation", "legitimate_interests")
MAX_TEXT = 1000  # a purpose or an explanation: a paragraph, not a document
MAX_ITEM = 200  # one data category or recipient


def prose(value: object, limit: int = MAX_TEXT) -> str:
    """Text of the record of processing on one line (YAML's folded blocks keep a line break at the
    end, and a table cell holds none), never empty, at most `limit` characters."""
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not text")
    text = " ".join(value.split())
    if not text:
        raise ValueError("is empty: write the text, or leave the field out")
    if len(text) > limit:
        raise ValueError(f"is {len(text)} characters long; at most {limit}")
    return text


def distinct_items(values: list[str], what: str, none_allowed: bool) -> list[str]:
    """Each item on one line and once; an empty list only where `none_allowed` (no recipients)."""
    if not values and not none_allowed:
        raise ValueError(f"is empty: list at least one {what}, or leave the field out")
    items = [prose(value, MAX_ITEM) for value in values]
    repeated = sorted({item for item in items if items.count(item) > 1})
    if repeated:
        raise ValueError(f"{', '.join(repeated)} listed twice: each {what} once")
    return items


class LawfulBasis(StrictModel):
    """Why a domain's processing is lawful, in the law's own terms: the Art. 6(1) bases, the Art. 9(2)
    condition where the data is of a special category (health data), and for a legal obligation or a
    legitimate interest, which one."""

    article_6: list[str] = Field(min_length=1)
    article_9: str | None = None
    explanation: str | None = None

    @field_validator("article_6", mode="before")
    @classmethod
    def _known_bases(cls, v: object) -> object:
        bases = [v] if isinstance(v, str) else v
        if not isinstance(bases, list):
            return v
        for basis in bases:
            if not isinstance(basis, str) or basis not in ARTICLE_6:
                raise ValueError(f"{basis!r} is not a lawful basis of GDPR Art. 6(1): write one or more of "
                                 f"{', '.join(ARTICLE_6)}")
        if len(set(bases)) < len(bases):
            raise ValueError("a basis is listed twice: name each once")
        return bases

    @field_validator("article_9")
    @classmethod
    def _known_condition(cls, v: str | None) -> str | None:
        if v is not None and v not in ARTICLE_9:
            raise ValueError(f"{v!r} is not a condition of GDPR Art. 9(2): write one of {', '.join(ARTICLE_9)}")
        return v

    _explanation = field_validator("explanation", mode="before")(lambda cls, v: None if v is None else prose(v))

    @model_validator(mode="after")
    def _explained(self) -> LawfulBasis:
        unexplained = [basis for basis in EXPLAINED_BASES if basis in self.article_6]
        if unexplained and not self.explanation:
            raise ValueError(f"explanation: {' and '.join(unexplained)} needs one, naming the law that imposes the "
                             "obligation (Art. 6(3)) or the interest pursued (Art. 13(1)(d))")
        return self

    def cited(self) -> str:
        """'Art. 6(1)(b) contract; Art. 6(1)(c) legal obligation — tax law …': the bases as the law cites
        them, then the explanation."""
        bases = "; ".join(f"Art. 6(1)({ARTICLE_6[b]}) {b.replace('_', ' ')}" for b in self.article_6)
        return f"{bases} — {self.explanation}" if self.explanation else bases

    def cited_condition(self) -> str | None:
        """'Art. 9(2)(a) explicit consent', or None where no special category is processed."""
        if self.article_9 is None:
            return None
        return f"Art. 9(2)({ARTICLE_9[self.article_9]}) {self.article_9.replace('_', ' ')}"


# The fields of a domain's record of processing, each with what it answers; each is optional, and
# `retention policies validate` warns about every one a domain leaves out.
PROCESSING_FIELDS = {
    "purpose": "the purpose of the processing (GDPR Art. 30(1)(b))",
    "lawful_basis": "the lawful basis (Art. 6(1); with the Art. 9(2) condition for health data)",
    "data_categories": "the categories of personal data (Art. 30(1)(c))",
    "recipients": "the categories of recipients the data is disclosed to (Art. 30(1)(d)); [] for none",
}


class DomainPolicy(StrictModel):
    """One retention domain: which rows of which table expire when, and what happens to them."""

    name: str
    description: str = ""
    # A disabled domain is validated but gets no job or schedule: a way to declare a domain
    # before its behaviour is built, or to pause one without losing its policy.
    enabled: bool = True
    table: str
    primary_key: str
    clock_column: str
    # The zone a `timestamp without time zone` clock's values are wall times of (an IANA name such
    # as UTC or Europe/Berlin): required for such a column, which is then compared in this zone,
    # never in a session's; a clock column that keeps its zone (timestamptz) needs none.
    clock_timezone: str | None = None
    # What a NULL clock means, required for a nullable clock column: `keep` (the row never falls
    # due; the rows are counted on the domain's check and in `retention health`).
    clock_nulls: Literal["keep"] | None = None
    # An exact duration (1d is 86,400 s, never a calendar day that DST makes 23 or 25 hours long).
    retain_for: timedelta
    # 'delete' or {redact: …}: chosen by the value's type, so that a mistake inside `redact`
    # is reported once, not also as "should be 'delete'".
    action: Annotated[
        Annotated[Literal["delete"], Tag("delete")] | Annotated[RedactAction, Tag("redact")],
        Discriminator(lambda v: "redact" if isinstance(v, (dict, RedactAction)) else "delete"),
    ]
    archive: Archive = Archive()
    blob_key_column: str | None = None
    batch_size: int = Field(default=5000, ge=1, le=100_000)
    # Batches deleted side by side, each in its own transaction on its own connection: the
    # database works on more than one core, as the bare DELETE it is measured against cannot.
    parallel_batches: int = Field(default=2, ge=1, le=8)
    pacing: Pacing = Pacing()
    subject_column: str | None = None
    # What a request for erasure does to the subject's rows: 'erase' them now, whatever their
    # deadline, or 'keep_until_deadline': erase none before its deadline (GDPR Art. 17(3)(b), (e):
    # a legal obligation, evidence for legal claims), saying why in on_erasure_reason; the request
    # then stays partially blocked until the last of them has gone.
    on_erasure: Literal["erase", "keep_until_deadline"] = "erase"
    on_erasure_reason: str | None = None
    partitions: Partitions
    schedule: Schedule = Schedule()
    sla: Sla
    # The record of processing (PROCESSING_FIELDS): why the data is kept, on what grounds, what it
    # is and who receives it, shown beside its time limits in the compliance report and by
    # `retention policies schedule`.
    purpose: str | None = None
    lawful_basis: LawfulBasis | None = None
    data_categories: list[str] | None = None
    recipients: list[str] | None = None

    _idents = field_validator("name", "table", "primary_key", "clock_column")(lambda cls, v: identifier(v))
    _optional_idents = field_validator("blob_key_column", "subject_column")(
        lambda cls, v: None if v is None else identifier(v)
    )
    _retain = field_validator("retain_for", mode="before")(lambda cls, v: parse_duration(v))
    _purpose = field_validator("purpose", mode="before")(lambda cls, v: None if v is None else prose(v))
    _categories = field_validator("data_categories")(
        lambda cls, v: None if v is None else distinct_items(v, "category", none_allowed=False))
    _recipients = field_validator("recipients")(
        lambda cls, v: None if v is None else distinct_items(v, "recipient", none_allowed=True))

    @field_validator("clock_timezone")
    @classmethod
    def _known_zone(cls, v: str | None) -> str | None:
        if v is not None and v not in _zone_names():
            raise ValueError(f"{v!r} is not a time zone name of the IANA database, e.g. 'UTC', 'Europe/Berlin'")
        return v

    @field_validator("action", mode="before")
    @classmethod
    def _known_action(cls, v: object) -> object:
        if isinstance(v, dict) or v == "delete":
            return v
        raise ValueError(f"{v!r} is not an action: write 'delete' or 'redact: {{null_columns: […], stamp_column: …}}'")

    @field_validator("retain_for")
    @classmethod
    def _not_negative(cls, v: timedelta) -> timedelta:
        if v < timedelta(0):
            raise ValueError("must not be negative")
        return v

    @model_validator(mode="after")
    def _coherent(self) -> DomainPolicy:
        if self.on_erasure == "keep_until_deadline" and not (self.on_erasure_reason or "").strip():
            raise ValueError("on_erasure_reason: a domain that keeps its rows until their deadline on erasure "
                             "says why (the law or the claim it keeps them for)")
        if self.on_erasure == "erase" and self.on_erasure_reason is not None:
            raise ValueError("on_erasure_reason: only for on_erasure: keep_until_deadline")
        if self.on_erasure == "keep_until_deadline" and not self.subject_column:
            raise ValueError("on_erasure: only a domain with a subject_column is erased on request")
        if self.retain_for == timedelta(0) and self.clock_column == "created_at":
            # A zero period only makes sense on a clock that is itself a deadline (expires_at).
            raise ValueError("retain_for: must be longer than zero on a created_at clock")
        if self.redact and self.primary_key in self.redact.null_columns:
            raise ValueError("action.redact.null_columns: the primary key cannot be redacted")
        if self.blob_key_column and self.blob_key_column in self.archive.exclude_columns:
            raise ValueError("archive.exclude_columns: the blob key column is needed to find the object")
        if self.blob_key_column and not (self.redact and self.blob_key_column in self.redact.null_columns):
            raise ValueError("blob_key_column: a domain with objects redacts its rows and nulls the key "
                             "(action.redact.null_columns), so that no row points at a deleted object")
        if self.blob_key_column and not self.archive.enabled:
            raise ValueError("archive.enabled: objects are archived before they are deleted")
        if self.archive.enabled and self.name in RESERVED_ARCHIVE_PREFIXES:
            raise ValueError(f"name: {self.name}/ in the archive store holds no domain's archives; "
                             "an archived domain needs another name")
        if self.schedule.hour_of_day is not None and self.partitions.cadence == "hourly":
            raise ValueError("schedule.hour_of_day: an hourly domain runs every hour; leave it out")
        return self

    # The file the policy was read from, for messages about it found only at run time.
    _source: str = PrivateAttr(default="policy file")

    @property
    def source(self) -> str:
        return self._source

    @property
    def missing_processing_fields(self) -> list[str]:
        """The fields of the record of processing this domain leaves out."""
        return [name for name in PROCESSING_FIELDS if getattr(self, name) is None]

    @property
    def redact(self) -> Redact | None:
        return self.action.redact if isinstance(self.action, RedactAction) else None

    @property
    def action_name(self) -> str:
        """The audit action written for each record acted on: 'deleted' or 'redacted'."""
        return "redacted" if self.redact else "deleted"


class PolicyFile(StrictModel):
    """The whole policy file: its version and its domains by name."""

    version: str = Field(min_length=1, max_length=64)
    domains: dict[str, DomainPolicy] = Field(min_length=1)
    # Set by the loader: declared version + a digest of the file, so that an edit made
    # without bumping `version` is still told apart in the audit log.
    policy_version: str = ""

    @model_validator(mode="before")
    @classmethod
    def _name_domains(cls, data: object) -> object:
        if isinstance(data, dict) and isinstance(data.get("domains"), dict):
            named = {}
            for key, entry in data["domains"].items():
                named[key] = {"name": key, **entry} if isinstance(entry, dict) else entry
            data = {**data, "domains": named}
        return data

    @model_validator(mode="after")
    def _distinct_tables(self) -> PolicyFile:
        owner: dict[str, str] = {}
        for domain in self.domains.values():
            if domain.table in owner:
                raise ValueError(f"domain {domain.name}, field table: table {domain.table} already belongs to "
                                 f"domain {owner[domain.table]}; one table, one domain")
            owner[domain.table] = domain.name
        return self
