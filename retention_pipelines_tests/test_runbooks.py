"""Every check of the code location and every reason of the manual queue has a runbook section saying
what a failure means and what to do; every link of the runbooks leads somewhere."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg

from retention_pipelines.dagster_wiring.runbooks import RUNBOOK_METADATA_KEY, RUNBOOKS
from retention_pipelines.definitions import defs
from retention_pipelines.engine.oversight.queue import REASONS
from retention_pipelines.policies import load_policies
from retention_pipelines_tests.support.repository import REPOSITORY
from retention_pipelines_tests.support.runbook_pages import link_problem, read_page, runbook_problem

QUEUE_REASONS_PAGE = "queue_reasons.md"
DOMAINS = sorted(load_policies().domains, key=len, reverse=True)  # the longest first: none is part of another


def generic(check_name: str) -> str:
    """A check's name as its runbook spells it: a domain in it (`policy_meal_plans`) is `<domain>`."""
    for domain in DOMAINS:
        check_name = check_name.replace(domain, "<domain>")
    return check_name


def check_problems(root: Path, graph) -> list[str]:
    """Each check of the definitions without its runbook section, by asset and name."""
    problems = []
    for key in sorted(graph.asset_check_keys, key=lambda k: (k.name, k.asset_key.to_user_string())):
        link = graph.get(key).metadata.get(RUNBOOK_METADATA_KEY)
        problem = runbook_problem(root, f"check {key.name} of {key.asset_key.to_user_string()}",
                                  link.value if isinstance(link, dg.PathMetadataValue) else None, generic(key.name))
        problems.append(problem)
    return [problem for problem in problems if problem]


def reason_problems(root: Path) -> list[str]:
    return [problem for reason in REASONS if (problem := runbook_problem(
        root, f"queue reason {reason}", f"{RUNBOOKS}/{QUEUE_REASONS_PAGE}#{reason}", f"`{reason}`"))]


def link_problems(root: Path) -> list[str]:
    """Links of the runbooks, and the README's links into them, that lead to no file or heading."""
    readme = root / "README.md"
    links = [(page, target) for page in sorted((root / RUNBOOKS).glob("*.md")) for target in read_page(page).links]
    links += [(readme, target) for target in read_page(readme).links if target.startswith(RUNBOOKS)]
    return [f"{page.relative_to(root)}: {problem}" for page, target in links
            if (problem := link_problem(page, target))]


def test_the_definitions_have_checks_of_every_kind_to_look_for():
    names = {key.name for key in defs.resolve_asset_graph().asset_check_keys}
    assert {"no_rows_past_deadline", "no_archive_kept_beyond_keep_for", "audit_chain_intact", "subject_erased",
            "no_orphans", "no_overdue_items", "no_request_past_due", "database", "policy_meal_plans"} <= names


def test_every_check_of_the_definitions_has_its_runbook_section():
    problems = check_problems(REPOSITORY, defs.resolve_asset_graph())
    assert not problems, "checks without a runbook section:\n" + "\n".join(problems)


def test_every_queue_reason_has_its_runbook_section():
    problems = reason_problems(REPOSITORY)
    assert not problems, "queue reasons without a runbook section:\n" + "\n".join(problems)


def test_every_link_of_the_runbooks_leads_somewhere():
    problems = link_problems(REPOSITORY)
    assert not problems, "\n".join(problems)


def test_the_runbooks_index_lists_every_page():
    folder = REPOSITORY / RUNBOOKS
    listed = {target.partition("#")[0] for target in read_page(folder / "README.md").links}
    unlisted = sorted(page.name for page in folder.glob("*.md") if page.name != "README.md" and page.name not in listed)
    assert not unlisted, f"runbooks missing from {RUNBOOKS}/README.md: {unlisted}"


def without_section(page: Path, heading: str) -> None:
    """The page with one section (its heading to the next heading of its level or higher) cut out."""
    lines = page.read_text().splitlines(keepends=True)
    start = lines.index(heading + "\n")
    level = heading.split(" ", 1)[0]
    end = next((i for i in range(start + 1, len(lines))
                if lines[i].startswith("#") and len(lines[i].split(" ", 1)[0]) <= len(level)), len(lines))
    page.write_text("".join(lines[:start] + lines[end:]))


def test_a_runbook_taken_away_is_named(tmp_path):
    """The checks above can fail: a copy of the runbooks with a page, two sections and a heading
    gone names each check, reason and link that lost its runbook."""
    shutil.copytree(REPOSITORY / RUNBOOKS, tmp_path / RUNBOOKS)
    shutil.copy(REPOSITORY / "README.md", tmp_path / "README.md")
    runbooks = tmp_path / RUNBOOKS
    (runbooks / "no_orphans.md").unlink()
    without_section(runbooks / "manual_queue.md", "## `no_overdue_items`")
    without_section(runbooks / QUEUE_REASONS_PAGE, "## `delete_blocked`")
    health = runbooks / "health.md"
    health.write_text(health.read_text().replace("## policy\n", "## policies\n"))

    checks = "\n".join(check_problems(tmp_path, defs.resolve_asset_graph()))
    assert "check no_orphans of meal_plans/orphans: its runbook docs/runbooks/no_orphans.md is not there" in checks
    assert "check no_overdue_items of manual_queue/health" in checks
    assert "check policy_quiz_responses of retention/health: its runbook docs/runbooks/health.md#policy" in checks
    assert "check no_rows_past_deadline" not in checks
    assert reason_problems(tmp_path) == [
        "queue reason delete_blocked: its runbook docs/runbooks/queue_reasons.md#delete_blocked is not there"]
    links = "\n".join(link_problems(tmp_path))
    assert "docs/runbooks/README.md: link no_orphans.md leads to no file" in links
    assert "#no_overdue_items leads to no heading of manual_queue.md" in links


def test_a_check_defined_without_a_runbook_is_named():
    @dg.asset
    def plain():
        return None

    @dg.asset_check(asset=plain)
    def unexplained():
        return dg.AssetCheckResult(passed=True)

    graph = dg.Definitions(assets=[plain], asset_checks=[unexplained]).resolve_asset_graph()
    assert check_problems(REPOSITORY, graph) == ["check unexplained of plain: no runbook"]
