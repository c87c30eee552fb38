"""The engine's layout: one sub-package per capability, each importing only those below it, none
importing Dagster, the command line or the Dagster wiring."""

from __future__ import annotations

import ast
from pathlib import Path

import retention_pipelines.engine as engine

ENGINE = Path(engine.__file__).parent
# Bottom to top: a sub-package may import those before it, never one after it (resolution and
# report are both at the top and import neither of each other).
ORDER = ["identity", "audit", "oversight", "archive", "retention", "gdpr", "resolution", "report"]
UPWARD = ("dagster", "retention_pipelines.dagster_wiring", "retention_pipelines.cli", "retention_pipelines.definitions")


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_every_module_lives_in_a_capability_and_the_capabilities_are_the_known_ones():
    assert [path.name for path in ENGINE.glob("*.py")] == ["__init__.py"]
    packages = sorted(path.name for path in ENGINE.iterdir() if (path / "__init__.py").exists())
    assert packages == sorted(ORDER)


def test_no_capability_imports_one_above_it_nor_anything_outside_the_core():
    wrong = []
    for package in ORDER:
        for path in (ENGINE / package).glob("*.py"):
            for module in imported_modules(path):
                if module.startswith(UPWARD):
                    wrong.append(f"{package}/{path.name} imports {module}")
                parts = module.split(".")
                if parts[:2] == ["retention_pipelines", "engine"] and len(parts) > 2 and parts[2] in ORDER:
                    other = parts[2]
                    if ORDER.index(other) > ORDER.index(package) and {package, other} != {"resolution", "report"}:
                        wrong.append(f"{package}/{path.name} imports {other} (above it)")
                    if {package, other} == {"resolution", "report"}:
                        wrong.append(f"{package}/{path.name} imports {other} (its peer at the top)")
                elif parts[:2] == ["retention_pipelines", "engine"] and len(parts) == 2:
                    wrong.append(f"{package}/{path.name} imports the engine's root")
    assert not wrong, wrong


def reads_configuration(path: Path) -> list[str]:
    """What in the module reads the configuration itself: the settings' loader or model by name,
    or the process's environment (os.environ, os.getenv)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            found += [f"imports {alias.name}" for alias in node.names
                      if alias.name in ("load_settings", "RetentionSettings")]
        elif isinstance(node, ast.Import):
            found += [f"imports {alias.name}" for alias in node.names if alias.name.endswith(".settings")]
        elif (isinstance(node, ast.Attribute)
              and node.attr in ("load_settings", "RetentionSettings", "environ", "getenv")):
            found.append(f"uses {node.attr}")
        elif isinstance(node, ast.Name) and node.id in ("load_settings", "RetentionSettings", "environ", "getenv"):
            found.append(f"uses {node.id}")
    return found


def test_the_engine_is_handed_its_collaborators_and_never_reads_the_configuration():
    """The Dagster resource and the CLI read the settings and make the stores and keys; a module of
    the engine that read them too would run with collaborators its caller did not choose."""
    wrong = [f"{path.relative_to(ENGINE)} {what}" for path in sorted(ENGINE.rglob("*.py"))
             for what in reads_configuration(path)]
    assert not wrong, wrong


# What differs between PostgreSQL and SQLite is asked of stores/dialect.py by what it does; the engine
# never names a database.
DATABASE_WORDS = ("postgres", "sqlite")


def names_a_database(source: str) -> list[str]:
    """Where code (not a comment, not a docstring) names a database: a string, an identifier or an
    imported module with postgres or sqlite in it (`is_sqlite`, "postgresql", sqlalchemy.dialects.sqlite),
    or a dialect's name asked for (`connection.dialect.name`)."""
    tree = ast.parse(source)
    docstrings = {id(node.value) for node in ast.walk(tree)
                  if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            words = [node.value]
        elif isinstance(node, ast.Name):
            words = [node.id]
        elif isinstance(node, ast.Attribute):
            words = [node.attr]
            owner = node.value
            if node.attr == "name" and ("dialect" in (getattr(owner, "attr", None), getattr(owner, "id", None))):
                found.append(f"line {node.lineno}: dialect.name")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            words = [node.name]
        elif isinstance(node, ast.arg):
            words = [node.arg]
        elif isinstance(node, ast.keyword):
            words = [node.arg or ""]
        elif isinstance(node, ast.alias):
            words = [node.name, node.asname or ""]
        elif isinstance(node, ast.ImportFrom):
            words = [node.module or ""]
        else:
            continue
        found += [f"line {node.lineno}: {word!r}" for word in words
                  if any(database in word.lower() for database in DATABASE_WORDS)]
    return found


def test_no_engine_module_names_a_database():
    wrong = [f"{path.relative_to(ENGINE)} {where}" for path in sorted(ENGINE.rglob("*.py"))
             for where in names_a_database(path.read_text())]
    assert not wrong, "ask stores/dialect.py's Dialect instead:\n" + "\n".join(wrong)


def test_the_database_check_sees_code_and_not_comments_or_docstrings():
    """A check that finds nothing must not be a check that cannot find anything."""
    source = ('"""On PostgreSQL and SQLite alike."""\n'
              "from sqlalchemy.dialects.postgresql import insert\n"
              "def act(connection, database):\n"
              '    """SQLite: one writer at a time."""\n'
              "    # PostgreSQL takes advisory locks\n"
              '    if connection.dialect.name == "postgresql":\n'
              "        return database.is_sqlite\n"
              "def on_sqlite(dialect):\n"
              "    return dialect.name\n")
    assert sorted(names_a_database(source)) == [
        "line 2: 'sqlalchemy.dialects.postgresql'", "line 6: 'postgresql'", "line 6: dialect.name",
        "line 7: 'is_sqlite'", "line 8: 'on_sqlite'", "line 9: dialect.name"]
    assert names_a_database('"""PostgreSQL, SQLite."""\n# sqlite\nx = 1  # postgresql\n') == []
