"""The shipped policy file, changed for a test."""

from __future__ import annotations

import copy

import yaml

from retention_pipelines.policies import default_policy_path

SHIPPED = yaml.safe_load(default_policy_path().read_text())


def edit(change):
    """The shipped policy file, changed by `change(data)`, as YAML text."""
    data = copy.deepcopy(SHIPPED)
    change(data)
    return yaml.safe_dump(data, sort_keys=False)


def setting(domain: str, *path_and_value):
    """A change that sets domains[domain][path…] = value."""
    *path, key, value = path_and_value

    def change(data):
        node = data["domains"][domain]
        for part in path:
            node = node[part]
        node[key] = value
    return change
