"""The `retention` command: run domains, the demo, policies, legal holds, health, migrations and
the manual-resolution queue."""

from retention_pipelines.cli.main import main

__all__ = ["main"]
