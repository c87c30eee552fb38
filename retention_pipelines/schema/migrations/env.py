"""Alembic environment: runs on the connection handed over by retention_pipelines.schema."""

from alembic import context

from retention_pipelines.schema.tables import VERSION_TABLE, metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, version_table=VERSION_TABLE)
with context.begin_transaction():
    context.run_migrations()
