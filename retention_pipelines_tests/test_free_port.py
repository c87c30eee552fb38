"""free_port (support/servers.py) across test processes: `make test` runs two pytest-xdist workers,
each starting servers on ports it picks, and a port one of them picked is never handed to another
process while the first lives (its server may not have taken it yet, or be stopped for a fault)."""

from __future__ import annotations

import os
import subprocess
import sys

from retention_pipelines_tests.support.repository import REPOSITORY
from retention_pipelines_tests.support.servers import free_port

# Picked at random by the kernel from the ~14,000 ports a bind gets here, two sets of 500 would share
# about 18.
PORTS = 500


def test_a_port_picked_here_is_not_picked_by_another_process_while_this_one_lives():
    mine = {free_port() for _ in range(PORTS)}
    assert len(mine) == PORTS
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPOSITORY), os.environ.get("PYTHONPATH")]))}
    other = subprocess.run(
        [sys.executable, "-c", "from retention_pipelines_tests.support.servers import free_port\n"
                               f"print(*(free_port() for _ in range({PORTS})))"],
        env=env, capture_output=True, text=True, timeout=60, check=True)
    theirs = {int(port) for port in other.stdout.split()}
    assert len(theirs) == PORTS, other.stdout
    assert not mine & theirs
