"""Test databases: a fresh copy of the app's template on the test PostgreSQL, sessions in another
time zone, and every table dumped to compare before and after."""

from __future__ import annotations

import itertools
import uuid

import psycopg2
import sqlalchemy as sa

from retention_pipelines.stores import AppDatabase
from retention_pipelines_tests.support.servers import PostgresServer

_names = itertools.count()


def new_database(server: PostgresServer, template: str = "app_template") -> str:
    name = f"test_{next(_names)}_{uuid.uuid4().hex[:6]}"
    connection = psycopg2.connect(server.dsn("postgres"))
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}" TEMPLATE {template}')
    connection.close()
    return server.url(name)


def drop_database(server: PostgresServer, url: str) -> None:
    """A test's database gone once the test is: some 9 MB each, which a session of hundreds of tests
    otherwise leaves for the server's shutdown and the folder's removal at the very end. FORCE cuts off
    the sessions a test's pools or servers still hold."""
    name = url.rsplit("/", 1)[1]
    connection = psycopg2.connect(server.dsn("postgres"))
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    connection.close()


def in_session_time_zone(database: AppDatabase, zone: str) -> AppDatabase:
    """Every new session of `database` set to `zone` after this project's UTC pin: sessions whose
    zone someone changed (a pooler's reset query, a role's setting)."""
    def set_zone(dbapi_connection, record) -> None:
        dbapi_connection.autocommit = True  # a SET in a transaction rolled back would be undone
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET TimeZone = %s", (zone,))
        dbapi_connection.autocommit = False

    sa.event.listen(database.engine, "connect", set_zone)
    return database


def dump_all_tables(database: AppDatabase) -> dict[str, list[tuple]]:
    """Every row of every table (app and retention tables), sorted, plus sequence positions."""
    inspector = sa.inspect(database.engine)
    dump = {}
    with database.engine.connect() as connection:
        for name in sorted(inspector.get_table_names()):
            rows = connection.exec_driver_sql(f'SELECT * FROM "{name}"').all()
            dump[name] = sorted((tuple(repr(bytes(v) if isinstance(v, memoryview) else v) for v in row)
                                 for row in rows))
        if not database.is_sqlite:
            for (sequence,) in connection.exec_driver_sql(
                    "SELECT sequencename FROM pg_sequences WHERE schemaname = 'public' ORDER BY 1").all():
                dump[f"sequence {sequence}"] = connection.exec_driver_sql(
                    f'SELECT last_value, is_called FROM "{sequence}"').all()
    return dump


def tables(url: str) -> set[str]:
    """The database's tables and views, by name."""
    engine = sa.create_engine(url)
    try:
        inspector = sa.inspect(engine)
        return set(inspector.get_table_names()) | set(inspector.get_view_names())
    finally:
        engine.dispose()


def revision(url: str) -> list[str]:
    """The retention migrations' revision the database records (one, or none)."""
    from retention_pipelines.schema.tables import VERSION_TABLE

    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return list(connection.exec_driver_sql(f"SELECT version_num FROM {VERSION_TABLE}").scalars())
    finally:
        engine.dispose()


def database_at_revision(request, tmp_path, revision: str) -> AppDatabase:
    """A database (PostgreSQL or SQLite, by the fixture's param) with the retention tables at
    migration `revision`, nothing else: to see what a later migration does to what it finds."""
    from alembic import command

    from retention_pipelines import schema

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / f'at_{revision}.db'}"
    else:
        server = request.getfixturevalue("postgres_server")
        name = f"at_{revision}_{uuid.uuid4().hex[:8]}"
        server.create_database(name)
        url = server.url(name)
    database = AppDatabase(url)
    with database.engine.begin() as connection:
        command.upgrade(schema._config(connection), revision)
    return database
