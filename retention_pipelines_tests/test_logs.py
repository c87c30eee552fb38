"""JSON log lines: context fields, counts, masked e-mail addresses, the level variable; then the
same lines from a real domain run (in process and through `retention run`)."""

from __future__ import annotations

import io
import json
import logging
from datetime import timedelta

import dagster as dg
import pytest

from retention_pipelines.dagster_wiring.common import domain_partitions
from retention_pipelines.dagster_wiring.domain_factory import build_domain_defs
from retention_pipelines.dagster_wiring.resources import RetentionStores
from retention_pipelines.logs import LEVEL_VARIABLE, ROOT, configure_logging, get_logger, log_context, only_warnings
from retention_pipelines.stores.settings import ConfigurationError
from retention_pipelines_tests.support.app_rows import insert_quiz_rows, remaining_ids
from retention_pipelines_tests.support.cli import EMAIL as LOOKS_LIKE_EMAIL
from retention_pipelines_tests.support.cli import dagster_home, with_password

# `cli` (the root conftest's fixture) runs `retention` in process; clean_environment clears
# RETENTION_* and DAGSTER_HOME for every test of this module, as for the CLI tests.
pytestmark = pytest.mark.usefixtures("clean_environment")

PERSON = "jane.doe+diet@example.com"


@pytest.fixture(autouse=True)
def restored_logging(monkeypatch):
    """Each test configures logging from scratch; the package logger's handlers and level are put
    back afterwards (configure_logging keeps its first handler for the life of the process)."""
    monkeypatch.delenv(LEVEL_VARIABLE, raising=False)
    root = logging.getLogger(ROOT)
    saved_handlers, saved_level, saved_propagate = list(root.handlers), root.level, root.propagate
    root.handlers = []
    yield
    root.handlers, root.level, root.propagate = saved_handlers, saved_level, saved_propagate


@pytest.fixture
def stream() -> io.StringIO:
    stream = io.StringIO()
    configure_logging(stream=stream)
    return stream


def lines(stream: io.StringIO) -> list[dict]:
    """Every line parsed as JSON (a line that is not JSON fails the test)."""
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_inside_only_warnings_every_handler_gets_warnings_only_unless_debug_is_asked(monkeypatch):
    """What a batch of erasures does with the engine's lines: none below WARNING, to our stderr
    handler or to one another attached (as Dagster attaches its own); all of them at DEBUG."""
    ours, theirs = io.StringIO(), io.StringIO()
    configure_logging(stream=ours)
    logging.getLogger(ROOT).addHandler(logging.StreamHandler(theirs))
    log = get_logger("test_logs")
    with only_warnings():
        log.info("a domain's line")
        log.warning("a lock waited for")
    log.info("after the block")
    assert [line["message"] for line in lines(ours)] == ["a lock waited for", "after the block"]
    assert theirs.getvalue().splitlines() == ["a lock waited for", "after the block"]

    logging.getLogger(ROOT).handlers = []
    monkeypatch.setenv(LEVEL_VARIABLE, "DEBUG")
    everything = io.StringIO()
    configure_logging(stream=everything)
    with only_warnings():
        log.info("a domain's line")
    assert [line["message"] for line in lines(everything)] == ["a domain's line"]


def test_every_line_is_json_with_time_level_logger_and_message(stream):
    log = get_logger("test_logs")
    log.info("found %d rows", 12)
    log.warning("lag over the SLA")
    first, second = lines(stream)
    assert set(first) >= {"time", "level", "logger", "message"}
    assert first["level"] == "INFO" and second["level"] == "WARNING"
    assert first["logger"] == second["logger"] == "retention_pipelines.test_logs"
    assert first["message"] == "found 12 rows"
    assert first["time"][:2] == "20" and len(first["time"]) >= 19  # a timestamp, not an empty field


def test_the_context_fields_appear_nest_and_end_with_their_block(stream):
    log = get_logger("test_logs")
    log.info("before")
    with log_context(run_id="run-1", domain="quiz_responses"):
        log.info("outer")
        with log_context(partition="2026-11-29-10:00", domain="meal_plans"):
            log.info("inner")
        log.info("outer again")
        with log_context(partition=None):  # None adds nothing
            log.info("no partition")
    log.info("after")
    before, outer, inner, outer_again, no_partition, after = lines(stream)
    for line in (before, after):
        assert not {"run_id", "domain", "partition"} & set(line), line
    assert outer["run_id"] == "run-1" and outer["domain"] == "quiz_responses" and "partition" not in outer
    assert inner == {**inner, "run_id": "run-1", "domain": "meal_plans", "partition": "2026-11-29-10:00"}
    assert outer_again["domain"] == "quiz_responses" and "partition" not in outer_again
    assert "partition" not in no_partition


def test_an_exception_inside_a_block_still_ends_its_context(stream):
    log = get_logger("test_logs")
    with pytest.raises(RuntimeError):
        with log_context(run_id="run-2"):
            raise RuntimeError("boom")
    log.info("after")
    [after] = lines(stream)
    assert "run_id" not in after


def test_counts_passed_as_extra_appear_as_fields(stream):
    with log_context(domain="quiz_responses"):
        get_logger("test_logs").info("acted", extra={"rows": 7, "rows_failed": 0, "seconds": 1.25})
    [line] = lines(stream)
    assert line["rows"] == 7 and line["rows_failed"] == 0 and line["seconds"] == 1.25
    assert line["domain"] == "quiz_responses"


def test_email_addresses_are_masked_in_messages_arguments_and_tracebacks(stream):
    log = get_logger("test_logs")
    log.warning(f"row of {PERSON} refused")
    log.warning("row of %s refused", PERSON)
    try:
        raise ValueError(f'duplicate key value (email)=({PERSON}) violates "quiz_responses_pkey"')
    except ValueError:
        log.exception("batch failed")
    text = stream.getvalue()
    assert PERSON not in text and "example.com" not in text
    message, argument, failure = lines(stream)
    assert message["message"] == argument["message"] == "row of <redacted e-mail> refused"
    assert "ValueError" in failure["exc_info"] and "<redacted e-mail>" in failure["exc_info"]


def test_the_log_level_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(LEVEL_VARIABLE, "warning")
    stream = io.StringIO()
    configure_logging(default_level="DEBUG", stream=stream)
    log = get_logger("test_logs")
    log.info("not shown")
    log.warning("shown")
    assert [line["message"] for line in lines(stream)] == ["shown"]


def test_without_the_variable_the_default_level_applies():
    stream = io.StringIO()
    configure_logging(default_level="WARNING", stream=stream)
    log = get_logger("test_logs")
    log.info("not shown")
    log.error("shown")
    assert [line["level"] for line in lines(stream)] == ["ERROR"]


def test_a_bad_log_level_is_a_configuration_error_naming_the_variable(monkeypatch):
    monkeypatch.setenv(LEVEL_VARIABLE, "LOUD-7QX")
    with pytest.raises(ConfigurationError) as caught:
        configure_logging(stream=io.StringIO())
    assert LEVEL_VARIABLE in str(caught.value)
    assert "LOUD-7QX" not in str(caught.value)


def test_configuring_twice_keeps_one_handler():
    first, second = io.StringIO(), io.StringIO()
    handler = configure_logging(stream=first)
    assert configure_logging(stream=second) is handler
    root = logging.getLogger(ROOT)
    assert [h for h in root.handlers if h is handler] == [handler] and len(root.handlers) == 1
    get_logger("test_logs").info("once")
    assert [line["message"] for line in lines(first)] == ["once"]
    assert second.getvalue() == ""


# A real run ------------------------------------------------------------------------------------
def engine_lines(stream: io.StringIO) -> list[dict]:
    return [line for line in lines(stream) if line["logger"] == "retention_pipelines.engine"]


@pytest.fixture(params=["postgresql", "sqlite"])
def run_database(request, tmp_path, monkeypatch):
    """The app database and the stores of a run on it (Redis locks on PostgreSQL, file locks on
    SQLite, as in the demo)."""
    monkeypatch.setenv("RETENTION_HOME", str(tmp_path / "home"))
    if request.param == "postgresql":
        database = request.getfixturevalue("pg_database")
        stores = RetentionStores(database_url=request.getfixturevalue("pg_url"),
                                 archive_url=request.getfixturevalue("local_archive_url"),
                                 redis_url=request.getfixturevalue("redis_url"))
    else:
        database = request.getfixturevalue("sqlite_database")
        stores = RetentionStores(database_url=database.engine.url.render_as_string(hide_password=False),
                                 archive_url=request.getfixturevalue("local_archive_url"))
    return database, stores


def test_a_domain_runs_lines_carry_its_run_domain_partition_and_counts(policies, run_database, tmp_path, stream):
    database, stores = run_database
    due = insert_quiz_rows(database, [timedelta(hours=26)] * 4 + [timedelta(days=3)] * 2, email=PERSON)
    young = insert_quiz_rows(database, [timedelta(hours=1)] * 3, email=PERSON)
    policy = policies.domains["quiz_responses"]
    domain = build_domain_defs(policy, policies.policy_version)
    partition = domain_partitions(policy).get_last_partition_key()
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        result = dg.materialize(list(domain.assets), partition_key=partition, instance=instance,
                                resources={"retention_stores": stores}, raise_on_error=False)
    assert result.success
    assert remaining_ids(database) == set(young)

    engine = engine_lines(stream)
    assert engine, stream.getvalue()
    for line in engine:
        assert line["run_id"] == result.run_id, line
        assert line["domain"] == "quiz_responses", line
        assert line["partition"] == partition, line
    [found] = [line for line in engine if line.get("step") == "find" and "rows_found" in line]
    assert found["rows_found"] == len(due)
    acted = [line for line in engine if line.get("step") == "act"]
    assert [line["rows"] for line in acted] == [len(due)]
    assert acted[0]["rows_failed"] == 0
    # No address of the rows anywhere in the output, whichever logger wrote it.
    text = stream.getvalue()
    assert PERSON not in text and "@example.com" not in text


def test_retention_run_prints_json_lines_on_stderr_at_info(cli, pg_url, pg_database, tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home(tmp_path / "dagster_home")))
    monkeypatch.setenv("RETENTION_DATABASE_URL", with_password(pg_url))
    (tmp_path / "archive").mkdir()
    monkeypatch.setenv("RETENTION_ARCHIVE_URL", (tmp_path / "archive").as_uri())
    monkeypatch.setenv("RETENTION_HOME", str(tmp_path / "retention_home"))
    monkeypatch.setenv(LEVEL_VARIABLE, "INFO")
    due = insert_quiz_rows(pg_database, [timedelta(hours=25), timedelta(days=2)], email=PERSON)
    insert_quiz_rows(pg_database, [timedelta(minutes=5)], email=PERSON)

    outcome = cli("run", "quiz_responses")
    assert outcome.code == 0, outcome.text
    assert PERSON not in outcome.text and not LOOKS_LIKE_EMAIL.search(outcome.text), outcome.text
    logged = [json.loads(line) for line in outcome.err.splitlines() if line.startswith("{")]
    assert logged, outcome.err
    engine = [line for line in logged if line["logger"] == "retention_pipelines.engine"]
    assert engine, outcome.err
    assert all(line["domain"] == "quiz_responses" and line["partition"] and line["run_id"] for line in engine)
    assert len({line["run_id"] for line in engine}) == 1
    [found] = [line for line in engine if line.get("step") == "find" and "rows_found" in line]
    assert found["rows_found"] == len(due)
    # The summary table stays on stdout: no log line there.
    assert not any(line.startswith("{") for line in outcome.out.splitlines())


@pytest.mark.parametrize("level", [None, "ERROR"], ids=["default-warning", "error"])
def test_retention_run_logs_nothing_below_its_level(cli, pg_url, pg_database, tmp_path, monkeypatch, level):
    """The terminal gets the table; log lines only from WARNING up (or RETENTION_LOG_LEVEL's level),
    even while Dagster runs the job (dagster.yaml hands it the package's loggers)."""
    if level:
        monkeypatch.setenv(LEVEL_VARIABLE, level)
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home(tmp_path / "dagster_home")))
    monkeypatch.setenv("RETENTION_DATABASE_URL", with_password(pg_url))
    monkeypatch.setenv("RETENTION_ARCHIVE_URL", (tmp_path / "archive").as_uri())
    monkeypatch.setenv("RETENTION_HOME", str(tmp_path / "retention_home"))
    insert_quiz_rows(pg_database, [timedelta(hours=25)], email=PERSON)
    outcome = cli("run", "quiz_responses")
    assert outcome.code == 0, outcome.text
    allowed = {"WARNING", "ERROR", "CRITICAL"} if level is None else {"ERROR", "CRITICAL"}
    logged = [json.loads(line) for line in outcome.err.splitlines() if line.startswith("{")]
    assert all(line["level"] in allowed for line in logged), outcome.err


def test_retention_refuses_a_bad_log_level_naming_the_variable(cli, monkeypatch):
    monkeypatch.setenv(LEVEL_VARIABLE, "CHATTY")
    outcome = cli("policies", "validate")
    assert outcome.code == 2, outcome.text
    assert LEVEL_VARIABLE in outcome.err and "CHATTY" not in outcome.err
