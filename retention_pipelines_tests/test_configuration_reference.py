"""The README's configuration table names every environment variable the code reads, and no other:
the settings' fields (RETENTION_*), the logger's and the policy loader's variables, and the ones
deploy/dagster.yaml takes its connection from."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from retention_pipelines.logs import LEVEL_VARIABLE
from retention_pipelines.policies.loader import POLICIES_ENV
from retention_pipelines.stores.settings import RetentionSettings

REPOSITORY = Path(__file__).resolve().parents[1]


def documented() -> list[str]:
    text = (REPOSITORY / "README.md").read_text()
    section = text.split("## Configuration (environment variables)", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return [re.match(r"\| `([A-Z0-9_]+)` \|", row)[1] for row in rows]


def env_references(node) -> set[str]:
    """Every {env: NAME} in a dagster.yaml."""
    if isinstance(node, dict):
        found = {node["env"]} if set(node) == {"env"} else set()
        return found.union(*(env_references(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(env_references(value) for value in node))
    return set()


def read_by_the_code() -> set[str]:
    prefix = RetentionSettings.model_config["env_prefix"]
    settings = {f"{prefix}{name}".upper() for name in RetentionSettings.model_fields}
    instance = set().union(*(env_references(yaml.safe_load((REPOSITORY / "deploy" / name).read_text()))
                             for name in ("dagster.yaml", "workspace.yaml")))
    return settings | instance | {LEVEL_VARIABLE, POLICIES_ENV, "DAGSTER_HOME"}


def test_every_variable_is_in_the_table_once_and_the_table_names_no_other():
    names = documented()
    assert len(names) == len(set(names)), [n for n in names if names.count(n) > 1]
    assert set(names) == read_by_the_code(), {"undocumented": read_by_the_code() - set(names),
                                              "not read by the code": set(names) - read_by_the_code()}
    assert {"DAGSTER_PG_HOST", "DAGSTER_PG_PASSWORD", "RETENTION_ARCHIVE_MASTER_KEY"} <= set(names)


def test_each_row_says_its_default_and_what_it_does():
    text = (REPOSITORY / "README.md").read_text()
    section = text.split("## Configuration (environment variables)", 1)[1].split("\n## ", 1)[0]
    for row in (line for line in section.splitlines() if line.startswith("| `")):
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert len(cells) == 3 and cells[1] and len(cells[2]) > 5, row
