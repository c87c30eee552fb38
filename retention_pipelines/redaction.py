"""What may be shown: no e-mail address and no credential leaves the process.

Messages are built from ids and counts, but an error raised by a driver or a server may quote a
row's values or a connection string; every message shown to an operator or stored by Dagster
passes through `without_personal_data`. A URL setting is shown only as `display_url` makes it.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit

# One e-mail pattern for every guard that refuses an address and for the mask of messages.
# Internationalised addresses (jörg@bücher.de, 用户@例子.广告) are made of letters, combining marks
# and dots of any script, which Python's \w only partly covers: any character outside ASCII that
# is not a space counts as part of an address; within ASCII, the characters an address allows.
# A match starts only where a run of such characters starts: tried at every character of a long
# run without '@' (a base64 blob in a traceback), the search would take quadratic time.
_ASCII_IN_ADDRESS, _NON_ASCII = r"""[A-Za-z0-9.!#$%&'*+/=?^_`{|}~"-]""", r"[^\x00-\x7f\s]"
_DOMAIN_LABEL = rf"(?:[A-Za-z0-9-]|{_NON_ASCII})+"
EMAIL = re.compile(rf"(?<!{_ASCII_IN_ADDRESS})(?<!{_NON_ASCII})(?:{_ASCII_IN_ADDRESS}|{_NON_ASCII})+"
                   rf"@{_DOMAIN_LABEL}(?:\.{_DOMAIN_LABEL})*")

_SCHEME_CHARACTER = r"[A-Za-z0-9+.\-]"
_SCHEME = rf"[A-Za-z]{_SCHEME_CHARACTER}*://"
# scheme://user:password@ anywhere in a text: the user-info goes, the scheme and the host stay.
_USER_INFO = re.compile(rf"(?<!{_SCHEME_CHARACTER})({_SCHEME})[^\s/?#@]*@")
# Query parameters whose value is a credential in any URL (libpq's password=, a signed URL's
# signature, an API's token=).
_SECRET_PARAMETER = re.compile(r"pass|pwd|token|secret|sig|key|credential", re.IGNORECASE)
MASK = "***"


def display_url(url: str) -> str:
    """A URL setting as every message shows it: scheme://host[:port], and /… when it has more.

    Everything after the host may be a credential (a webhook's path is its secret, a query may
    carry a password or a signature), and so is the user-info before it; none of it is shown."""
    if not re.match(_SCHEME, url.strip()):  # no host to show (user:password@host without a scheme)
        return "…"
    try:
        parts = urlsplit(url.strip())
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return "…"
    host = parts.netloc.rpartition("@")[2]
    more = parts.path not in ("", "/") or parts.query or parts.fragment
    return f"{parts.scheme}://{host}" + ("/…" if more else "")


def url_secrets(url: str | None, capability: bool = False) -> tuple[list[str], list[str]]:
    """The credentials inside a URL setting, as (secrets, user names): its password and the values
    of its credential parameters; for a capability URL (a webhook, which anyone who knows it may
    post to) also every path segment and parameter value that looks like a token."""
    if not url:
        return [], []
    try:
        parts = urlsplit(url.strip())
        users, secrets = [parts.username], [parts.password]
    except ValueError:
        return [], []
    for name, _, value in (pair.partition("=") for pair in parts.query.split("&")):
        if _SECRET_PARAMETER.search(name) or capability and _looks_like_token(value):
            secrets.append(value)
    if capability:
        secrets += [segment for segment in parts.path.split("/") if _looks_like_token(unquote(segment))]
    return [v for s in secrets if s for v in (s, unquote(s))], [v for u in users if u for v in (u, unquote(u))]


def _looks_like_token(segment: str) -> bool:
    """A part of a webhook's URL that is a token, not a word: its path and query mix both
    (/services/T0/B0/XXXX, /api/alerts/<token>?format=json), and masking a word such as
    `alerts` everywhere would garble every message that uses it."""
    return len(segment) >= 20 or (len(segment) >= 8 and not segment.isalpha())


class _Known:
    """The secrets of every setting loaded in this process (stores/settings.py remembers them)."""

    def __init__(self):
        self.secrets: set[str] = set()
        self.users: set[str] = set()
        self.pattern: re.Pattern | None = None
        self.lock = threading.Lock()

    def remember(self, secrets: Iterable[str | None], users: Iterable[str | None] = ()) -> None:
        with self.lock:
            secrets = self.secrets | {s for s in secrets if s}
            users = self.users | {u for u in users if u}
            if secrets == self.secrets and users == self.users:
                return
            self.secrets, self.users = secrets, users
            # Longest first, so that a secret containing another is masked whole. A secret stands
            # alone (not glued to letters or digits: a short password must not garble words); a
            # user name is often an ordinary word (postgres, default), so it is masked where a
            # driver quotes it (role "x", user "x").
            alternatives = []
            if secrets:
                alternatives.append(r"(?<![A-Za-z0-9])(?:" + _alternation(secrets) + r")(?![A-Za-z0-9])")
            if users:
                alternatives.append(r"(?<=[\"'])(?:" + _alternation(users) + r")(?=[\"'])")
            self.pattern = re.compile("|".join(alternatives))


def _alternation(values: set[str]) -> str:
    return "|".join(re.escape(value) for value in sorted(values, key=len, reverse=True))


_known = _Known()


def remember_secrets(secrets: Iterable[str | None], users: Iterable[str | None] = ()) -> None:
    """Values to mask wherever a message quotes them verbatim, from now on in this process."""
    _known.remember(secrets, users)


def without_personal_data(message: str) -> str:
    """The message with credentials and e-mail addresses masked: the user-info of any URL, every
    known secret, then every address (after the user-info, which looks like one: user:pw@host)."""
    message = _USER_INFO.sub(r"\1", message)
    if _known.pattern is not None:
        message = _known.pattern.sub(MASK, message)
    return EMAIL.sub("<redacted e-mail>", message)
