"""Long work's progress on the operator's terminal (run, erasure run, restore, archive expiry): what
is done, as the audit log counts it, against the rows found where they are known, with the rate;
nothing when standard error is not a terminal, for a dry run or with JSON output."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import termios

from retention_pipelines_tests.support.app_rows import bulk_insert_pg
from retention_pipelines_tests.support.archives import archive_with_an_old_batch
from retention_pipelines_tests.support.cli import RETENTION_SCRIPT
from retention_pipelines_tests.support.engines import blacklist_deleted_by_a_run


def run_on_a_terminal(*args: str, timeout: float = 180) -> tuple[int, str, str]:
    """The console script with its standard error on a pseudo-terminal: (exit code, stdout, what the
    terminal showed)."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # a terminal 160 columns wide
    process = subprocess.Popen([str(RETENTION_SCRIPT), *args], stdout=subprocess.PIPE, stderr=terminal,
                               env=dict(os.environ), text=True)
    os.close(terminal)
    shown = b""
    while True:
        ready, _, _ = select.select([controller], [], [], timeout)
        if not ready:
            process.kill()
            raise AssertionError(f"no output for {timeout} s: {shown[-2000:]!r}")
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the terminal's other end closed: the process is done with it
            break
        if not chunk:
            break
        shown += chunk
    out = process.stdout.read()
    code = process.wait(timeout=timeout)
    os.close(controller)
    return code, out, shown.decode(errors="replace")


def test_a_run_shows_the_records_done_against_those_found_with_the_rate(cli_env):
    bulk_insert_pg(cli_env, 3000, "30 hours")
    code, out, shown = run_on_a_terminal("run", "quiz_responses")
    assert code == 0, out + shown
    final = shown.replace("\r", "\n").strip().splitlines()
    bars = [line for line in final if line.startswith("quiz_responses")]
    assert bars, (shown, out)
    assert re.search(r"100%.*3000/3000 \[[0-9:]+<00:00, *[0-9.]+ records/s\]", bars[-1]), bars[-1]
    assert "acted_on" in out and "3000" in out  # the summary table is unchanged, on standard output


def test_no_bar_in_json_nor_for_a_dry_run(cli_env):
    bulk_insert_pg(cli_env, 50, "30 hours")
    for args in (["run", "quiz_responses", "--json"], ["run", "quiz_responses", "--dry-run"]):
        code, out, shown = run_on_a_terminal(*args)
        assert code == 0, out + shown
        assert "records/s" not in shown and "%|" not in shown, (args, shown)


def test_an_erasure_run_counts_the_records_it_erases_naming_the_request_not_the_person(cli, cli_env):
    address = "erin.subject@example.net"
    bulk_insert_pg(cli_env, 40, "2 hours", email=address)
    requested = cli("erasure", "request", "--email", address, "--json")
    assert requested.code == 0, requested.text
    request_id = json.loads(requested.out)["id"]
    code, out, shown = run_on_a_terminal("erasure", "run", str(request_id))
    assert code == 0, out + shown
    bars = [line for line in shown.replace("\r", "\n").splitlines() if line.startswith("erasure request")]
    assert bars and re.search(rf"^erasure request {request_id}: 40 records \[", bars[-1]), shown
    assert "erin" not in shown.lower() and "erin" not in out.lower()


def bars_of(shown: str, what: str) -> list[str]:
    return [line for line in shown.replace("\r", "\n").splitlines() if line.startswith(what)]


def test_a_restore_counts_the_rows_it_puts_back(cli_env):
    blacklist_deleted_by_a_run(cli_env, 12)
    code, out, shown = run_on_a_terminal("restore", "--domain", "email_blacklist", "--run", "run-in", "--by", "ops")
    assert code == 0, out + shown
    bars = bars_of(shown, "email_blacklist restore")
    assert bars and re.search(r"^email_blacklist restore: 12 records \[", bars[-1]), shown
    assert "restored 12, refused 0" in out


def test_an_archive_expiry_counts_the_objects_it_deletes(cli_env):
    archive_with_an_old_batch(cli_env)
    code, out, shown = run_on_a_terminal("archive", "expire", "--domain", "email_blacklist")
    assert code == 0, out + shown
    bars = bars_of(shown, "email_blacklist archive expiry")
    assert bars and re.search(r"^email_blacklist archive expiry: 2 objects \[", bars[-1]), shown


def test_a_report_shows_its_stages_as_it_goes(cli_env, tmp_path):
    out = tmp_path / "report"
    code, stdout, shown = run_on_a_terminal("report", "--month", "2026-10", "--out", str(out))
    assert code == 0, stdout + shown
    final = shown.replace("\r", "\n").strip().splitlines()
    bars = [line for line in final if line.startswith("report 2026-10")]
    assert bars, (shown, stdout)
    assert re.search(r"100%.*4/4 .*done", bars[-1]), bars[-1]
    assert any("verifying the audit chain" in line for line in bars), bars
    assert any(out.iterdir())  # the report itself is written as before
    code, stdout, shown = run_on_a_terminal("report", "--month", "2026-10", "--out", str(out), "--json")
    assert code == 0 and "stages" not in shown, shown
