"""What may be shown (redaction.py): a URL setting as scheme://host[:port]/… only, no secret of the
settings in any message, and one e-mail pattern behind every guard and mask — internationalised
addresses included (a Hypothesis property), ordinary text without '@' never taken for one."""

from __future__ import annotations

import base64
import contextlib
import io
import os
import time
from datetime import timedelta
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retention_pipelines.cli.main import main
from retention_pipelines.dagster_wiring.resources import RetentionStores
from retention_pipelines.engine.gdpr.requests import ErasureRefused, ErasureRequests
from retention_pipelines.engine.oversight.queue import ManualQueue, QueueRefused
from retention_pipelines.redaction import EMAIL, display_url, without_personal_data
from retention_pipelines.stores import load_settings
from retention_pipelines_tests.support.secret_canaries import (
    SECRET_SETTINGS,
    USER_NAMES,
    canary_environment,
    leaked,
    new_canaries,
)

MASKED = "<redacted e-mail>"


@pytest.fixture
def canaries(monkeypatch) -> dict[str, str]:
    """Fresh canaries in every secret-bearing setting's variable (hosts that need not exist)."""
    made = new_canaries()
    for name, value in canary_environment(made, "db.internal:5432/app", "cache.internal:6379",
                                          "https://hooks.example.com", "metrics.internal:9091").items():
        monkeypatch.setenv(name, value)
    return made


# URL settings ------------------------------------------------------------------------------------
SHOWN = {
    "RETENTION_DATABASE_URL": "postgresql+psycopg2://db.internal:5432/…",
    "RETENTION_REDIS_URL": "redis://cache.internal:6379/…",
    "RETENTION_ALERT_WEBHOOK_URL": "https://hooks.example.com/…",
    "RETENTION_SLACK_API_URL": "https://hooks.example.com/…",
    "RETENTION_PAGERDUTY_EVENTS_URL": "https://hooks.example.com/…",
    "RETENTION_PUSHGATEWAY_URL": "http://metrics.internal:9091",
}


@pytest.mark.parametrize("variable", SHOWN)
def test_every_url_setting_is_shown_as_its_scheme_host_and_port_only(variable, canaries):
    shown = display_url(os.environ[variable])
    assert shown == SHOWN[variable]
    assert not leaked(shown, canaries)


@pytest.mark.parametrize("url, shown", [
    ("https://hooks.slack.com/services/T0000/B0000/XXXXXXXXXXXXXXXXXXXXXXXX", "https://hooks.slack.com/…"),
    ("https://ops.example.com/hooks/retention", "https://ops.example.com/…"),
    ("postgresql://app@db:5432/app?password=hunter22&sslmode=require", "postgresql://db:5432/…"),
    ("https://api.example.com?token=abc123", "https://api.example.com/…"),
    ("https://api.example.com/#secret", "https://api.example.com/…"),
    ("https://user:pw@example.com", "https://example.com"),
    ("https://user:p@ss@example.com/", "https://example.com"),  # an @ left unencoded in the password
    ("redis://:pw@[::1]:6379/0", "redis://[::1]:6379/…"),
    ("s3://bucket/prefix", "s3://bucket/…"),
    ("sqlite:////var/lib/retention/demo.db", "sqlite:///…"),
    ("app:hunter22@db:5432/app", "…"),  # no scheme: nothing is a host for certain
    ("http://[::1/x", "…"),  # unreadable
])
def test_a_url_is_shown_without_user_info_path_or_query(url, shown):
    assert display_url(url) == shown


# Secrets in free text ----------------------------------------------------------------------------
def as_drivers_quote(canaries: dict[str, str]) -> list[str]:
    """Messages as a driver or a server words them, quoting every canary: user names in quotes
    (libpq: role "x"), passwords inside connection strings, tokens and keys bare or as parameters."""
    c = canaries
    quoted = [f'FATAL:  password authentication failed for user "{c[name]}"' for name in USER_NAMES]
    quoted += [f"could not parse 'postgresql://{c['database_user']}:{c['database_password']}@db:5432/app'",
               f"POST https://hooks.example.com/alerts/{c['webhook_token']} failed",
               f"redis://{c['redis_user']}:{c['redis_password']}@cache:6379/0: connection refused"]
    bare = [f"{name}={c[name]}&x=1" for name in SECRET_SETTINGS if name not in USER_NAMES]
    bare += [f"invalid token {c[name]}." for name in SECRET_SETTINGS if name not in USER_NAMES]
    return quoted + bare


@pytest.mark.parametrize("name", SECRET_SETTINGS)
def test_every_secret_of_the_settings_is_masked_wherever_a_message_quotes_it(name, canaries):
    load_settings()  # the settings in force: their secrets are remembered
    value = canaries[name]
    messages = [message for message in as_drivers_quote(canaries) if value in message]
    assert messages
    for message in messages:
        assert value not in without_personal_data(message), message


def test_the_secrets_of_urls_given_to_the_dagster_resource_are_masked_too(monkeypatch):
    """The resource's fields win over the environment: their credentials are the ones in force."""
    c = new_canaries()
    urls = canary_environment(c, "db.internal:5432/app", "cache.internal:6379", "https://hooks.example.com",
                              "metrics.internal:9091")
    RetentionStores(database_url=urls["RETENTION_DATABASE_URL"], redis_url=urls["RETENTION_REDIS_URL"],
                    alert_webhook_url=urls["RETENTION_ALERT_WEBHOOK_URL"],
                    pushgateway_url=urls["RETENTION_PUSHGATEWAY_URL"]).settings()
    for name in ("database_password", "redis_password", "webhook_token", "pushgateway_password"):
        assert not leaked(without_personal_data(f"failed: {c[name]}"), {name: c[name]})
    for name in USER_NAMES:
        assert not leaked(without_personal_data(f'role "{c[name]}" does not exist'), {name: c[name]})


@pytest.mark.parametrize("message, shown", [
    ("connect to postgresql+psycopg2://app:hunter22@db:5432/app failed",
     "connect to postgresql+psycopg2://db:5432/app failed"),
    ("redis://:hunter22@cache:6379/0 refused", "redis://cache:6379/0 refused"),
    ("GET https://someone@example.com/x", "GET https://example.com/x"),
    ("'amqp://guest:guest@[::1]:5672/'", "'amqp://[::1]:5672/'"),
])
def test_the_user_info_of_any_url_in_a_message_is_removed(message, shown):
    """Whether or not the URL is one of the settings."""
    assert without_personal_data(message) == shown


def test_words_are_not_masked_for_resembling_a_secret(canaries, monkeypatch):
    """A secret is masked where it stands alone, not inside a longer word; a user name (often an
    ordinary word) where a driver quotes it, not wherever the word occurs."""
    monkeypatch.setenv("RETENTION_DATABASE_URL", f"postgresql://scanner:{canaries['database_password']}@db/app")
    load_settings()
    text = f"the scanner run finished; {canaries['slack_token']}x is no token"
    assert without_personal_data(text) == text
    assert without_personal_data('role "scanner" does not exist') == 'role "***" does not exist'


# One e-mail pattern ------------------------------------------------------------------------------
def refused_by_queue_by(text: str) -> bool:
    return _refused(lambda: ManualQueue(SimpleNamespace(now=None)).claim(1, text), QueueRefused)


def refused_by_queue_note(text: str) -> bool:
    return _refused(lambda: ManualQueue(SimpleNamespace(now=None)).resolve(1, "ops-bob", text), QueueRefused)


def refused_by_erasure_extension(text: str) -> bool:
    return _refused(lambda: ErasureRequests(None).extend(1, timedelta(days=10), text), ErasureRefused)


def _refused(call, refusal) -> bool:
    """Whether `call` was refused for personal data (anything after the guard fails on the
    missing database)."""
    try:
        call()
    except refusal as exc:
        return "personal data" in str(exc)
    except AttributeError:
        return False
    return False


def refused_by_cli(*args: str, words: str) -> bool:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(list(args))
    return code == 2 and words in err.getvalue()


GUARDS = {
    "queue --by": refused_by_queue_by,
    "queue --note": refused_by_queue_note,
    "erasure extend --reason": refused_by_erasure_extension,
    "hold add --reason": lambda text: refused_by_cli("hold", "add", "--domain", "meal_plans", "--record-id", "r-1",
                                                     "--reason", text, "--by", "legal", words="e-mail address"),
    "hold add --record-id": lambda text: refused_by_cli("hold", "add", "--domain", "meal_plans", "--record-id", text,
                                                        "--reason", "case 12", "--by", "legal",
                                                        words="e-mail address"),
    "hold add --by": lambda text: refused_by_cli("hold", "add", "--domain", "meal_plans", "--record-id", "r-1",
                                                 "--reason", "case 12", "--by", text, words="e-mail address"),
    "restore --by": lambda text: refused_by_cli("restore", "--domain", "email_blacklist", "--run", "r", "--by", text,
                                                words="not an e-mail address"),
    "log mask": lambda text: MASKED in without_personal_data(text),
}

ADDRESSES = [
    "jörg@bücher.de", "用户@例子.广告", "user@xn--bcher-kva.example", "jane.doe+diet@example.com",
    '"jane.doe"@example.com', "JANE.DOE@EXAMPLE.COM", "jo\u0308rg@bu\u0308cher.de",  # decomposed umlauts
    "उपयोगकर्ता@उदाहरण.भारत", "δοκιμή@παράδειγμα.δοκιμή", "x@y.z",
]


@pytest.mark.parametrize("address", ADDRESSES)
@pytest.mark.parametrize("guard", GUARDS)
def test_every_guard_refuses_or_masks_these_addresses(guard, address):
    assert GUARDS[guard](f"called {address} about it")


@pytest.mark.parametrize("address", ADDRESSES)
def test_the_mask_covers_the_whole_address(address):
    assert without_personal_data(f"row of {address} refused") == f"row of {MASKED} refused"
    assert without_personal_data(f"Key (email)=({address}) exists") == f"Key (email)=({MASKED}) exists"


@pytest.mark.parametrize("text", ["case 42", "ticket OPS-7: customer asked twice, see runbook", "100% done",
                                  "用户 例子.广告", "jörg at bücher dot de", "a.b-c_d+e", "re: retention"])
@pytest.mark.parametrize("guard", [g for g in GUARDS if g != "log mask"])
def test_no_guard_refuses_ordinary_text(guard, text, monkeypatch):
    # Past the guard, the commands fail on a database that is not there.
    monkeypatch.setenv("RETENTION_DATABASE_URL", "postgresql+psycopg2://127.0.0.1:1/nothing")
    assert not GUARDS[guard](text)
    assert without_personal_data(text) == text


# Any script's letters, combining marks and digits; a top-level domain of letters.
_WORD = st.text(st.characters(categories=("L", "M", "N")), min_size=1, max_size=10)


@st.composite
def addresses(draw) -> str:
    local = draw(_WORD)
    for _ in range(draw(st.integers(0, 2))):  # dots, +tags, separators
        local += draw(st.sampled_from(".+_-")) + draw(_WORD)
    if draw(st.booleans()):
        local = f'"{local}"'  # a quoted local part
    labels = draw(st.lists(_WORD, min_size=1, max_size=3))
    tld = draw(st.text(st.characters(categories=("L",)), min_size=2, max_size=8))
    address = f"{local}@{'.'.join([*labels, tld])}"
    return address.upper() if draw(st.booleans()) else address


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(address=addresses())
def test_every_guard_refuses_or_masks_any_internationalised_address(address):
    text = f"asked by {address} today"
    assert without_personal_data(text) == f"asked by {MASKED} today"
    for name, refused in GUARDS.items():
        assert refused(text), name


@settings(max_examples=300, deadline=None)
@given(text=st.text().filter(lambda t: "@" not in t))
def test_text_without_an_at_sign_is_never_taken_for_an_address(text):
    assert EMAIL.search(text) is None


def test_a_long_run_without_an_address_is_scanned_in_linear_time():
    """A traceback may quote a blob (base64, a long path): masking it must not hang the log."""
    blob = base64.b64encode(bytes(range(256)) * 2000).decode()  # ≈ 680,000 characters, no '@'
    started = time.monotonic()
    for text in (blob, ".".join(["ab"] * 200_000), "http://" * 100_000):
        assert without_personal_data(f"x {text} y") == f"x {text} y"
    assert time.monotonic() - started < 10
