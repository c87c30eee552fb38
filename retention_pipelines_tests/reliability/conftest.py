"""The reliability suite's summary: its table at the end of the session (see figures.py)."""

from __future__ import annotations

from retention_pipelines_tests.reliability.figures import FIGURES, table, write_artifact


def pytest_terminal_summary(terminalreporter):
    if not FIGURES:
        return
    write_artifact(FIGURES)
    terminalreporter.section("reliability and security (issue 9)")
    terminalreporter.write_line(table(FIGURES))
