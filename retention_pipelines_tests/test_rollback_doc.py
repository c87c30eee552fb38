"""docs/rollback.md: every `retention` command in its code blocks is one this project's parser takes,
each domain kind has its restore command, and the README and docs/deploy.md link to it."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from retention_pipelines.cli.main import build_parser
from retention_pipelines.policies import load_policies

REPOSITORY = Path(__file__).resolve().parents[1]
ROLLBACK = REPOSITORY / "docs" / "rollback.md"
PLACEHOLDERS = {"RUN_ID": "r", "NAME": "ops", "ID": "1", "D": "meal_plans"}


def retention_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", ROLLBACK.read_text(), flags=re.S)
    lines = [line.split("  #", 1)[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line.startswith("retention ")]


def test_every_retention_command_of_the_rollback_doc_parses():
    commands = retention_commands()
    assert {" ".join(c.split()[:3]) for c in commands} >= {"retention db downgrade", "retention db upgrade"}
    parser = build_parser()
    for text in commands:
        words = [PLACEHOLDERS.get(w, w) for w in shlex.split(text.replace("[", "").replace("]", "").replace("…", ""))]
        parser.parse_args(words[1:])  # exits (fails the test) on a command or option that does not exist


def test_every_archived_domain_has_its_restore_command_and_the_others_are_named():
    commands = retention_commands()
    text = ROLLBACK.read_text()
    for name, policy in load_policies().domains.items():
        if policy.archive.enabled:
            assert any(c.startswith(f"retention restore --domain {name} ") for c in commands), name
        else:
            [paragraph] = [p for p in text.split("\n\n") if "cannot be restored" in p]
            assert f"`{name}`" in paragraph, name


def test_the_readme_and_the_deploy_doc_link_to_it():
    assert "(docs/rollback.md)" in (REPOSITORY / "README.md").read_text()
    assert "(rollback.md)" in (REPOSITORY / "docs" / "deploy.md").read_text()
