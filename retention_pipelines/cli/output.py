"""What a command prints on standard output: aligned tables and sentences for a person, or, with
`--json`, one JSON document for a script: each table under its name, the facts of each sentence as
fields, the sentences themselves under "messages". Refusals stay one line on standard error with
their exit code, in both forms."""

from __future__ import annotations

import json
import sys
from datetime import date, datetime
from decimal import Decimal

from tabulate import tabulate


class Output:
    """The one printer of a command's result; `main` chooses the form and flushes it."""

    def __init__(self) -> None:
        self.as_json = False
        self.document: dict = {}

    def start(self, as_json: bool) -> None:
        self.as_json, self.document = as_json, {}

    def table(self, rows: list[dict], name: str = "rows") -> None:
        if self.as_json:
            self.document[name] = rows
        else:
            print_table(rows)

    def record(self, fields: dict, name: str) -> None:
        """One thing's fields, a line each, names aligned; in JSON an object under `name`."""
        if self.as_json:
            self.document[name] = fields
            return
        width = max((len(key) for key in fields), default=0)
        for key, value in fields.items():
            print(f"{key:>{width}}: {'' if value is None else value}")

    def say(self, text: str, **facts: object) -> None:
        """A sentence for a person; in JSON its facts (named as the sentence's numbers are), and the
        sentence under "messages"."""
        if self.as_json:
            self.document.setdefault("messages", []).append(text)
            self.document.update(facts)
        else:
            print(text)

    def warn(self, text: str) -> None:
        """Something a person should fix that changes no exit code: a line on standard error; in JSON
        under "warnings"."""
        if self.as_json:
            self.document.setdefault("warnings", []).append(text)
        else:
            print(f"retention: warning: {text}", file=sys.stderr)

    def flush(self) -> None:
        if self.as_json:
            print(json.dumps(self.document, default=_plain, ensure_ascii=False))
        self.document = {}


def print_table(rows: list[dict]) -> None:
    """Rows as aligned columns, each value as its own text and a missing one blank: no NaN, NaT or
    None where there is nothing, and no number reformatted."""
    if not rows:
        print("(none)")
        return
    columns = list(dict.fromkeys(column for row in rows for column in row))
    print(tabulate([[row.get(column) for column in columns] for row in rows], headers=columns, tablefmt="plain",
                   missingval="", disable_numparse=True))


def _plain(value: object) -> object:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (set, frozenset, tuple)):
        return sorted(value) if isinstance(value, (set, frozenset)) else list(value)
    return str(value)


OUTPUT = Output()
show_table, show_record, say, warn = OUTPUT.table, OUTPUT.record, OUTPUT.say, OUTPUT.warn
