"""The image and its lock, without a Docker engine: the Dockerfile builds the image docs/deploy.md
describes (python:3.11-slim, a numbered non-root user, the production instance in DAGSTER_HOME, the
code location as its command), it installs requirements.lock and nothing else, and the environment
running these tests is exactly that lock. So what CI tests is what the image runs."""

from __future__ import annotations

import importlib
import json
import re
import shlex
import tomllib
from importlib import metadata
from pathlib import Path, PurePosixPath

import click
import pytest
import yaml
from packaging.requirements import Requirement

from retention_pipelines_tests.support.deploy_files import service_command

REPOSITORY = Path(__file__).resolve().parents[1]
DAGSTER_FAMILY = ("dagster", "dagster-webserver", "dagster-graphql", "dagster-postgres", "dagster-aws", "dagster-k8s",
                  "dagster-slack")
# Dagster packages that only the tests and developers use (the test extra, requirements-test.lock).
DAGSTER_TEST_FAMILY = ("dagster-dg-cli",)
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;\\]+)(?:\s*;[^-]+)?"
                 r"(?:\s+--hash=sha256:[0-9a-f]{64})*$")


def normalise(name: str) -> str:
    """PEP 503: the lock, pyproject and the installed metadata spell one package differently."""
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_lines(name: str) -> list[str]:
    """The requirement lines of a lock file, each with its continuation lines (the hashes) joined."""
    text = re.sub(r"\\\n", " ", (REPOSITORY / name).read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def lock_pins(name: str) -> dict[str, str]:
    pins = {}
    for line in lock_lines(name):
        match = PIN.match(line)
        assert match, f"{name}: not an exact pin: {line[:120]}"
        pins[normalise(match["name"])] = match["version"]
    return pins


def pyproject() -> dict:
    return tomllib.loads((REPOSITORY / "pyproject.toml").read_text())


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions, stage by stage: (INSTRUCTION, arguments), continuations joined."""
    lines = [line for line in (REPOSITORY / "Dockerfile").read_text().splitlines() if not line.lstrip().startswith("#")]
    stages: list[list[tuple[str, str]]] = []
    for line in re.sub(r"\\\n", " ", "\n".join(lines)).splitlines():
        if not line.strip():
            continue
        instruction, _, arguments = line.strip().partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            stages.append([])
        assert stages, f"an instruction before the first FROM: {line}"
        stages[-1].append((instruction, arguments.strip()))
    return stages


def final_stage() -> list[tuple[str, str]]:
    return dockerfile_stages()[-1]


def arguments_of(stage: list[tuple[str, str]], instruction: str) -> list[str]:
    return [arguments for name, arguments in stage if name == instruction]


def environment(stage: list[tuple[str, str]]) -> dict[str, str]:
    variables = {}
    for arguments in arguments_of(stage, "ENV"):
        for pair in shlex.split(arguments):
            key, equals, value = pair.partition("=")
            assert equals, f"ENV {arguments}: write ENV KEY=value"
            variables[key] = value
    return variables


def expand(text: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda match: variables[match[1]], text)


def stage_name(stage: list[tuple[str, str]]) -> str | None:
    words = stage[0][1].split()
    return words[2] if len(words) == 3 and words[1].upper() == "AS" else None


def parse_command(words: list[str]) -> click.Context:
    """Parses a command line with the installed console script's click command, without running
    it: an unknown command or option, or a bad value, raises click's usage error."""
    program, *arguments = words
    [entry_point] = metadata.entry_points(group="console_scripts", name=program)
    command = importlib.import_module(entry_point.module).cli
    assert isinstance(command, click.Command), entry_point
    context, name = None, program
    while isinstance(command, click.Group):
        context = click.Context(command, info_name=name, parent=context)
        name, *arguments = arguments
        command = command.get_command(context, name)
        assert command is not None, f"{program}: no command {name!r}"
    return command.make_context(name, arguments, parent=context)


def test_the_final_stage_is_python_3_11_slim_and_runs_as_a_numbered_user_that_is_not_root():
    stage = final_stage()
    image = stage[0][1].split()[0]
    # The Debian release is part of the tag: a bare python:3.11-slim moves to the next one unasked.
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim-[a-z]+", image), image
    users = arguments_of(stage, "USER")
    assert users, "the image runs as root"
    user = users[-1].split(":")[0]
    assert user.isdigit() and int(user) != 0, f"USER {users[-1]}: a fixed uid other than root's"
    # Nothing is compiled, so nothing to compile with: no build tools in the image that runs.
    assert not any(re.search(r"apt-get install|gcc|build-essential", arguments)
                   for arguments in arguments_of(stage, "RUN"))


def test_the_image_installs_the_lock_and_the_project_without_its_dependencies():
    stages = dockerfile_stages()
    final = stages[-1]
    copied_into_final = {re.search(r"--from=(\S+)", arguments)[1]
                         for arguments in arguments_of(final, "COPY") if "--from=" in arguments}
    lock_destinations = [shlex.split(arguments)[-1] for stage in stages for arguments in arguments_of(stage, "COPY")
                         if shlex.split(arguments)[0] == "requirements.lock"]
    assert lock_destinations, "requirements.lock is not copied into the image"
    installs = []
    for stage in stages:
        for arguments in arguments_of(stage, "RUN"):
            for command in re.split(r"&&|;", arguments):
                if re.search(r"\bpip3? install\b", command):
                    # Each install ends up in the final image: made there, or in a stage it copies from.
                    assert stage is final or stage_name(stage) in copied_into_final, command
                    installs.append(shlex.split(command))
    from_lock = [words for words in installs if "-r" in words]
    assert from_lock and all(words[words.index("-r") + 1] in lock_destinations for words in from_lock), installs
    project = [words for words in installs if "-r" not in words]
    assert project, "the project is not installed"
    for words in project:
        # Anything but --no-deps would let pip resolve pyproject's ranges again, around the lock.
        assert "--no-deps" in words, " ".join(words)


def test_the_image_holds_the_production_instance_and_the_deploy_files():
    final = final_stage()
    variables = environment(final)
    assert variables["DAGSTER_HOME"] == "/opt/dagster/dagster_home"
    assert variables["PYTHONUNBUFFERED"] == "1"
    # Outside the demo the settings refuse to start without the production variables: the image
    # must not switch that off.
    assert "RETENTION_ENV" not in variables
    copies = {}
    for arguments in arguments_of(final, "COPY"):
        words = [word for word in shlex.split(arguments) if not word.startswith("--")]
        for source in words[:-1]:
            copies[source.rstrip("/")] = expand(words[-1], variables).rstrip("/")
    assert PurePosixPath(copies["deploy/dagster.yaml"]) == PurePosixPath(variables["DAGSTER_HOME"], "dagster.yaml")
    assert copies["deploy"] == "/opt/dagster/app/deploy"
    assert arguments_of(final, "WORKDIR")[-1] == "/opt/dagster/app"
    assert set(" ".join(arguments_of(final, "EXPOSE")).split()) == {"3000", "4000"}


def test_the_default_command_starts_the_code_location_with_the_installed_dagster_cli():
    command = json.loads(arguments_of(final_stage(), "CMD")[-1])  # the exec form: signals reach dagster
    assert command[:3] == ["dagster", "code-server", "start"]
    assert command[command.index("-m") + 1] == "retention_pipelines.definitions"
    context = parse_command(command)
    assert (context.params["host"], context.params["port"]) == ("0.0.0.0", 4000)


def test_render_runs_the_dockerfile_with_commands_the_installed_cli_accepts(monkeypatch):
    services = [service for service in yaml.safe_load((REPOSITORY / "render.yaml").read_text())["services"]
                if service["type"] in {"web", "pserv", "worker"}]
    assert {service["name"] for service in services} == {"retention-code", "dagster-webserver", "dagster-daemon"}
    # The repository root stands in for the image's /opt/dagster/app: deploy/ is at the same place in both.
    monkeypatch.chdir(REPOSITORY)
    for service in services:
        assert (service["runtime"], service["dockerfilePath"]) == ("docker", "./Dockerfile"), service["name"]
        # $PORT is Render's, expanded by the command's shell (any port parses alike); the image's
        # working directory is the repository root's stand-in.
        words = [word.replace("$PORT", "3000").removeprefix("/opt/dagster/app/") for word in service_command(service)]
        parse_command(words)
        if "-w" in words:
            assert (REPOSITORY / words[words.index("-w") + 1]).is_file(), service["name"]
        if "-m" in words:
            assert words[words.index("-m") + 1] == "retention_pipelines.definitions"


def test_every_line_of_the_locks_pins_an_exact_version():
    for name in ("requirements.lock", "requirements-test.lock"):
        pins = lock_pins(name)  # fails on any line that is not name==version (with its hashes)
        assert "psycopg2-binary" in pins, name
        # SQLAlchemy 2.1 would take psycopg 3 for a bare postgresql:// URL; the instance names psycopg2.
        assert "psycopg" not in pins, f"{name} picked up psycopg (v3)"
    runtime = lock_pins("requirements.lock")
    assert len(runtime) > 50  # the whole tree, not only pyproject's direct dependencies


def test_the_test_lock_is_the_image_lock_plus_the_test_tools():
    runtime, test = lock_pins("requirements.lock"), lock_pins("requirements-test.lock")
    assert {name: test.get(name) for name in runtime} == runtime
    extra = {normalise(Requirement(entry).name) for entry in pyproject()["project"]["optional-dependencies"]["test"]}
    assert extra <= set(test) - set(runtime)


def test_the_dagster_family_in_the_lock_is_pyprojects_pins():
    project = pyproject()["project"]
    declared = {}
    for entry in project["dependencies"] + project["optional-dependencies"]["k8s"]:
        requirement = Requirement(entry)
        if normalise(requirement.name) in DAGSTER_FAMILY:
            [specifier] = requirement.specifier
            assert specifier.operator == "==", entry
            declared[normalise(requirement.name)] = specifier.version
    assert set(declared) == set(DAGSTER_FAMILY)
    pins = lock_pins("requirements.lock")
    assert {name: pins.get(name) for name in DAGSTER_FAMILY} == declared


def test_the_dagster_tools_of_the_tests_are_pinned_with_the_family():
    project = pyproject()["project"]
    declared = {}
    for entry in project["optional-dependencies"]["test"]:
        requirement = Requirement(entry)
        if normalise(requirement.name) in DAGSTER_TEST_FAMILY:
            [specifier] = requirement.specifier
            assert specifier.operator == "==", entry
            declared[normalise(requirement.name)] = specifier.version
    assert set(declared) == set(DAGSTER_TEST_FAMILY)
    pins = lock_pins("requirements-test.lock")
    assert {name: pins.get(name) for name in DAGSTER_TEST_FAMILY} == declared
    # dg is released with dagster itself, under the same version.
    assert set(declared.values()) == {pins["dagster"]}


def test_every_dagster_package_in_the_locks_is_of_one_release():
    """Dagster releases its packages together: the core ones (dagster, dagster-webserver, dg, …) as
    1.x, the integrations (dagster-postgres, dagster-aws, …) as the matching 0.x. Pulled in by a
    dependency or named in pyproject, none may be of another release."""
    pins = lock_pins("requirements-test.lock")
    release = {pins["dagster"], pins["dagster-postgres"]}
    family = {name: version for name, version in pins.items() if name == "dagster" or name.startswith("dagster-")}
    assert {"dagster-dg-cli", "dagster-dg-core", "dagster-shared", "dagster-pipes"} <= set(family)
    assert {name: version for name, version in family.items() if version not in release} == {}


def test_the_running_environment_is_exactly_the_image_lock():
    installed = {}
    for distribution in metadata.distributions():  # sys.path order: the first one is the one imported
        installed.setdefault(normalise(distribution.metadata["Name"]), distribution.version)
    differences = {name: (version, installed.get(name, "not installed"))
                   for name, version in lock_pins("requirements.lock").items() if installed.get(name) != version}
    assert not differences, (
        f"locked (requirements.lock) vs installed: {differences}; `make setup` installs the lock")


def makefile_rule(target: str) -> tuple[list[str], list[str]]:
    """The prerequisites and the recipe lines of a Makefile rule."""
    lines = (REPOSITORY / "Makefile").read_text().splitlines()
    [start] = [index for index, line in enumerate(lines) if line.startswith(f"{target}:")]
    recipe = []
    for line in lines[start + 1:]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    return lines[start].split(":", 1)[1].split(), recipe


def test_make_setup_installs_the_locks_and_then_the_project_without_its_dependencies():
    prerequisites, recipe = makefile_rule("$(BIN)/retention")
    assert {"pyproject.toml", "requirements.lock", "requirements-test.lock"} <= set(prerequisites)
    installs = [shlex.split(line) for line in recipe if re.search(r"\bpip install\b", line)]
    assert any(words[words.index("-r") + 1] == "requirements-test.lock" for words in installs if "-r" in words), recipe
    for words in installs:
        if "-r" in words or words[-2:] == ["--upgrade", "pip"]:
            continue
        # The project itself: anything but --no-deps would resolve pyproject again, around the lock.
        assert "--no-deps" in words, " ".join(words)
    assert any(line.endswith("pip check") for line in recipe), recipe
    assert "$(BIN)/retention" in makefile_rule("setup")[0]
    assert "setup" in makefile_rule("test")[0]
    # requirements-test.lock brings requirements.lock's packages (checked above), so CI has both.


def test_make_test_lints_and_loads_the_code_location_before_the_tests():
    """A lint finding or a definition that does not build fails `make test` (and so CI) before any test."""
    _, recipe = makefile_rule("test")

    def line_of(command: str) -> int:
        [index] = [index for index, line in enumerate(recipe) if command in line]
        return index

    dg_check = recipe[line_of("$(BIN)/dg check defs")]
    # The demo's settings: outside the demo the code location refuses to load without every store named.
    assert "RETENTION_ENV=demo" in dg_check.split(), dg_check
    assert line_of("$(BIN)/ruff check .") < line_of("$(BIN)/dg check defs") < line_of("$(BIN)/pytest")


def test_make_test_runs_the_tests_on_two_workers_and_nothing_else_does():
    """`make test` on the machines' two cores; pytest alone (one test file, `make reliability`'s timings)
    stays in one process, so -n is never in pyproject's addopts."""
    [words] = [shlex.split(line) for line in makefile_rule("test")[1] if "$(BIN)/pytest" in line]
    assert words[words.index("-n") + 1] == "2", words
    assert "-n" not in shlex.split(pyproject()["tool"]["pytest"]["ini_options"]["addopts"])
    [words] = [shlex.split(line) for line in makefile_rule("reliability")[1] if "$(BIN)/pytest" in line]
    assert "-n" not in words and "--numprocesses" not in words, words


@pytest.mark.parametrize("entry", [".venv", ".git", "storage", ".retention", "test-artifacts", "**/__pycache__"])
def test_the_build_context_leaves_out_local_state(entry):
    assert entry in (REPOSITORY / ".dockerignore").read_text().splitlines()
