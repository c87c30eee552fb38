"""Runs in processes of their own (`python -m retention_pipelines_tests.support.runners.<module>`),
and the RunnerProcess that starts and watches one."""
