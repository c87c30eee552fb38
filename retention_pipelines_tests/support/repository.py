"""The repository's folder: where the tests run commands from and find the files it ships."""

from __future__ import annotations

from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]
