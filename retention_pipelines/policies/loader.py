"""Reading the policy file: every mistake becomes one PolicyError naming file, domain and field."""

from __future__ import annotations

import hashlib
import os
from importlib import resources
from pathlib import Path

import yaml
from pydantic import ValidationError

from retention_pipelines.policies.model import PolicyFile

POLICIES_ENV = "RETENTION_POLICIES_FILE"


class PolicyError(Exception):
    """A policy file that cannot be used. The message is meant for the operator, as it is."""


def default_policy_path() -> Path:
    """The file named by RETENTION_POLICIES_FILE, else the one shipped in the package."""
    override = os.environ.get(POLICIES_ENV)
    if override:
        return Path(override)
    return Path(str(resources.files("retention_pipelines") / "retention_policies.yaml"))


def load_policies(path: str | Path | None = None) -> PolicyFile:
    path = Path(path) if path is not None else default_policy_path()
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read the policy file ({exc.strerror or exc})") from None
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise PolicyError(f"{path}: YAML syntax error{where}: {problem}") from None
    if not isinstance(data, dict):
        raise PolicyError(f"{path}: expected a mapping with 'version' and 'domains' at the top level")
    try:
        policies = PolicyFile.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(_describe(path, exc)) from None
    digest = hashlib.sha256(raw).hexdigest()[:12]
    for policy in policies.domains.values():
        policy._source = str(path)
    return policies.model_copy(update={"policy_version": f"{policies.version}+{digest}"})


def _describe(path: Path, exc: ValidationError) -> str:
    """One line per problem: `file: domain D, field F: what is wrong`."""
    lines = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = [str(part) for part in error["loc"]]
        # Union branches (action: 'delete' | {redact: …}) add their type names to the path.
        loc = [p for p in loc if not p.startswith(("literal[", "RedactAction", "function-"))]
        # The action's union adds its branch's tag ('delete' / 'redact') to the path: say it once.
        loc = [p for i, p in enumerate(loc)
               if not (i and (p == loc[i - 1] or (loc[i - 1] == "action" and p == "delete")))]
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        if len(loc) >= 2 and loc[0] == "domains":
            field = ".".join(loc[2:]) or "(entry)"
            lines.append(f"{path}: domain {loc[1]}, field {field}: {message}")
        elif not loc and message.startswith("domain "):  # a rule across domains names its own domain
            lines.append(f"{path}: {message}")
        else:
            lines.append(f"{path}: field {'.'.join(loc) or '(top level)'}: {message}")
    return "\n".join(dict.fromkeys(lines))
