"""The tests' own layout: what they share lives in support/; a test imports helpers from there,
never from another test module or a conftest (whose fixtures pytest hands over by name)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
PACKAGE = TESTS.name
SUPPORT = TESTS / "support"


def modules() -> list[Path]:
    return sorted(path for path in TESTS.rglob("*.py") if "__pycache__" not in path.parts)


def dotted(path: Path) -> str:
    parts = path.relative_to(TESTS.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(path: Path) -> str:
    return dotted(path) if path.name == "__init__.py" else dotted(path).rpartition(".")[0]


def imported(source: str, package: str) -> set[str]:
    """Every module a file of `package` imports, and for `from module import name` module.name too
    (it may be a module)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the file's package, one level up per extra dot
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return found


def is_test_or_conftest(module: str) -> bool:
    last = module.rpartition(".")[2]
    return module.startswith(PACKAGE + ".") and (last.startswith("test_") or last == "conftest")


def test_no_test_module_or_helper_imports_a_test_module_or_a_conftest():
    offending = {f"{path.relative_to(TESTS)} imports {module}"
                 for path in modules() for module in imported(path.read_text(), package_of(path))
                 if is_test_or_conftest(module)}
    assert not offending, "import it from support/ instead:\n" + "\n".join(sorted(offending))


def test_every_module_but_tests_and_conftests_is_in_support():
    stray = [str(path.relative_to(TESTS)) for path in modules()
             if not path.name.startswith("test_") and path.name not in ("conftest.py", "__init__.py")
             and SUPPORT not in path.parents]
    assert not stray, "helpers belong in support/:\n" + "\n".join(stray)


def test_support_holds_no_test_and_no_conftest():
    misplaced = [str(path.relative_to(TESTS)) for path in SUPPORT.rglob("*.py")
                 if path.name.startswith("test_") or path.name == "conftest.py"]
    assert not misplaced, misplaced


def test_the_checks_see_every_kind_of_import():
    """A check that finds nothing must not be a check that cannot find anything."""
    source = (f"from {PACKAGE}.test_integration import test_daemon_sla\n"
              "from .test_blobs import PDF\n"
              "from ..conftest import new_database\n"
              f"import {PACKAGE}.test_cli.conftest\n"
              "def later():\n"
              f"    from {PACKAGE}.test_cli.test_run import parse_table\n")
    found = {module for module in imported(source, f"{PACKAGE}.test_engine.retention") if is_test_or_conftest(module)}
    assert found >= {f"{PACKAGE}.test_integration.test_daemon_sla", f"{PACKAGE}.test_engine.retention.test_blobs",
                     f"{PACKAGE}.test_engine.conftest", f"{PACKAGE}.test_cli.conftest",
                     f"{PACKAGE}.test_cli.test_run"}, found
    assert is_test_or_conftest(f"{PACKAGE}.test_engine.retention.test_blobs")
    assert is_test_or_conftest(f"{PACKAGE}.test_cli.conftest")
    assert not is_test_or_conftest(f"{PACKAGE}.support.cli")
    assert not is_test_or_conftest("retention_pipelines.engine.test_mode")  # the package under test is not ours
