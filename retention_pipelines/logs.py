"""One logging setup for the engine, the Dagster wiring and the CLI: JSON lines on stderr.

Every line carries the run id, domain and partition in force (`log_context`) and the counts the
caller passed as `extra`; e-mail addresses and credentials are masked before any handler sees a
record, Dagster's own included (dagster.yaml hands the `retention_pipelines` loggers to Dagster, so
the same lines appear in the run's event log in the UI).

    {"time": "...", "level": "INFO", "logger": "retention_pipelines.engine", "message": "...",
     "run_id": "...", "domain": "quiz_responses", "partition": "2026-11-29-10:00", "rows_found": 12}
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import sys
from collections.abc import Iterator
from typing import TextIO

from pythonjsonlogger.json import JsonFormatter

from retention_pipelines.errors import ConfigurationError
from retention_pipelines.redaction import without_personal_data

ROOT = "retention_pipelines"
LEVEL_VARIABLE = "RETENTION_LOG_LEVEL"

_context: contextvars.ContextVar[dict] = contextvars.ContextVar("retention_log_context", default={})


class _Scrubbed(logging.Filter):
    """Adds the fields of `log_context` and masks e-mail addresses and credentials in the message.
    A logger's filter runs before the record reaches any handler, this package's or Dagster's."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        record.msg, record.args = without_personal_data(record.getMessage()), None
        return True


class _JsonLines(JsonFormatter):
    def process_log_record(self, log_data: dict) -> dict:
        # Tracebacks quote driver errors, which may quote a row's values or a connection string.
        for key in ("exc_info", "stack_info"):
            if isinstance(log_data.get(key), str):
                log_data[key] = without_personal_data(log_data[key])
        return log_data


def get_logger(name: str) -> logging.Logger:
    """The logger `retention_pipelines.<name>`, scrubbed and carrying the log context."""
    logger = logging.getLogger(f"{ROOT}.{name}")
    if not any(isinstance(f, _Scrubbed) for f in logger.filters):
        logger.addFilter(_Scrubbed())
    return logger


@contextlib.contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """Fields (run_id, domain, partition, …) added to every line logged inside the block."""
    token = _context.set({**_context.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


class _Stderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a line is written, not when the handler was made
    (the CLI's callers and tests swap it)."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def configure_logging(default_level: str = "INFO", stream: TextIO | None = None) -> logging.Handler:
    """JSON lines for every `retention_pipelines` logger, at RETENTION_LOG_LEVEL (else
    `default_level`). One handler per process: a second call sets its level again.

    The level is the handler's: Dagster resets the loggers it manages to dagster.yaml's
    `python_log_level` at the start of every run (so its event log gets those lines), which
    must not make the CLI's terminal chattier."""
    root = logging.getLogger(ROOT)
    level = os.environ.get(LEVEL_VARIABLE, default_level).upper()
    if level not in logging.getLevelNamesMapping():
        raise ConfigurationError(f"{LEVEL_VARIABLE} is not a log level: use DEBUG, INFO, WARNING or ERROR")
    root.setLevel(level)
    handler = _json_handler()
    if handler is None:
        handler = logging.StreamHandler(stream) if stream is not None else _Stderr()
        handler.setFormatter(_JsonLines("{asctime}{levelname}{name}{message}", style="{",
                                        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"}))
        root.addHandler(handler)
    handler.setLevel(level)
    return handler


def ensure_logging() -> logging.Handler:
    """configure_logging() unless the process's entry point (the CLI) already did: loading the
    code location must not undo the level the CLI chose."""
    return _json_handler() or configure_logging()


@contextlib.contextmanager
def only_warnings(level: int = logging.WARNING) -> Iterator[None]:
    """Inside the block the package's loggers write lines at `level` or above only, to every
    handler (Dagster's stores each line as an event of the run: a run that erases hundreds of
    requests would otherwise store a few lines of every domain of every request, and spend half its
    time doing so). RETENTION_LOG_LEVEL=DEBUG keeps every line, for a look into one run."""
    root, ours = logging.getLogger(ROOT), _json_handler()
    if ours is not None and ours.level <= logging.DEBUG:
        yield
        return
    before = root.level
    root.setLevel(max(before, level))
    try:
        yield
    finally:
        root.setLevel(before)


def _json_handler() -> logging.Handler | None:
    return next((h for h in logging.getLogger(ROOT).handlers if isinstance(h.formatter, _JsonLines)), None)
