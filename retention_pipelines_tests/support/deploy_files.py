"""Reading the deployment files as their platforms do, for the tests of deploy/, render.yaml and the image."""

from __future__ import annotations

import shlex


def service_command(service: dict) -> list[str]:
    """A render.yaml service's command as words, through `sh -c '…'` and its `exec`."""
    words = shlex.split(service.get("dockerCommand") or service.get("startCommand") or "")
    if words[:2] == ["sh", "-c"]:
        words = shlex.split(words[2])
    return words[1:] if words[:1] == ["exec"] else words
