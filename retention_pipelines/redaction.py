"""The last line of defence for messages that leave the process: no e-mail address gets through.

Messages are built from ids and counts, but an error raised by a driver or a server may quote a
row's values; every message shown to an operator or stored by Dagster passes through here.
"""

import re

EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")


def without_personal_data(message: str) -> str:
    return EMAIL.sub("<redacted e-mail>", message)
