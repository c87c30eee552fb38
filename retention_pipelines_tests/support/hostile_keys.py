"""Keys that try to leave a local store's folder, and a sandbox that tells whether one did.

The sandbox is a store folder deep inside a temporary tree whose every level above the store holds
a file (`secret.pdf`, with SECRET in it), beside a folder `outside/`; inside the store, symbolic
links lead out (a file, a folder, a folder on the way, a chain, `..`) and one loops. A key that
climbs with `..` never climbs higher than the tree, so that even a store that failed to refuse it
would only ever touch the sandbox, where the test sees it.

What the store does is watched two ways: the files of the sandbox outside the store are compared
before and after (written, deleted, created), and an audit hook (PEP 578) records every path the
store opens, lists, creates, renames, links or removes while it works (read, listed).
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from hypothesis import strategies as st

SECRET = b"SECRET: a file outside the store"
DEPTH = 4  # levels of the sandbox above the store's parent: `..` climbs at most this far past the store
LINKS_OUT = ["out_file", "out_dir/secret.pdf", "out_dir/sub/secret.pdf", "out_rel/secret.pdf", "out_dir/new.pdf",
             "plans/deep_out/secret.pdf", "plans/deep_out/new.pdf", "chain/secret.pdf", "up/secret.pdf",
             "up/outside/secret.pdf", "up/store/../outside/secret.pdf", "loop", "loop/x.pdf", "out_dir", "out_rel"]
FIXTURE_NAMES = {"out_file", "out_dir", "out_rel", "plans", "chain", "chain2", "up", "loop", "alias", "inside.pdf"}

# Audit events of the calls that open, list, create, move or remove a path (os.stat has none), and
# how many of their first arguments are paths.
WATCHED_EVENTS = {"open": 1, "os.listdir": 1, "os.scandir": 1, "os.mkdir": 1, "os.remove": 1, "os.rmdir": 1,
                  "os.rename": 2, "os.link": 2, "os.symlink": 2, "os.truncate": 1, "os.chmod": 1, "os.utime": 1}
_touched: list[str] | None = None


def _audit(event: str, args: tuple) -> None:
    if _touched is not None and event in WATCHED_EVENTS:
        for arg in args[:WATCHED_EVENTS[event]]:
            if isinstance(arg, (str, bytes, os.PathLike)):  # not a descriptor
                _touched.append(os.fsdecode(arg))


sys.addaudithook(_audit)


@dataclass(frozen=True)
class Sandbox:
    top: Path  # nothing under it may change but the store's own folder
    root: Path  # the store's folder

    @classmethod
    def build(cls, top: Path) -> Sandbox:
        level = top
        for depth in range(DEPTH + 1):
            level.mkdir(exist_ok=True)
            (level / "secret.pdf").write_bytes(SECRET + f" at level {depth}".encode())
            level = level / "d"
        parent = level.parent  # the store's parent: the last level made
        outside = parent / "outside"
        (outside / "sub").mkdir(parents=True)
        (outside / "secret.pdf").write_bytes(SECRET + b" in outside/")
        (outside / "sub" / "secret.pdf").write_bytes(SECRET + b" in outside/sub/")
        root = parent / "store"
        (root / "plans").mkdir(parents=True)
        (root / "inside.pdf").write_bytes(b"%PDF inside")
        (root / "out_file").symlink_to(outside / "secret.pdf")
        (root / "out_dir").symlink_to(outside)
        (root / "out_rel").symlink_to("../outside")
        (root / "plans" / "deep_out").symlink_to(outside / "sub")
        (root / "chain2").symlink_to(outside)
        (root / "chain").symlink_to("chain2")  # inside → inside → out
        (root / "up").symlink_to("..")
        (root / "loop").symlink_to("loop")
        (root / "alias").symlink_to("plans")  # a link that stays inside: allowed
        return cls(top, root)

    def outside_files(self) -> dict[str, object]:
        """Every entry of the sandbox outside the store: folders, files with their bytes, links."""
        found: dict[str, object] = {}
        for folder, folders, files in os.walk(self.top):
            here = Path(folder)
            if here == self.root:
                folders[:] = []
                continue
            for name in folders + files:
                path = here / name
                relative = path.relative_to(self.top).as_posix()
                if path == self.root:
                    continue
                if path.is_symlink():
                    found[relative] = ("link", os.readlink(path))
                elif path.is_dir():
                    found[relative] = "folder"
                else:
                    found[relative] = path.read_bytes()
        return found

    def is_inside(self, path: str) -> bool:
        """Whether `path` is the store's folder or lies in it, once its links are resolved (the
        folder it is in, for an entry that is itself a link inside the store)."""
        root = os.path.realpath(self.root)
        where = Path(os.path.abspath(path))
        real = Path(os.path.realpath(where.parent)) / where.name
        return real == Path(root) or real.is_relative_to(root)

    @contextlib.contextmanager
    def watching(self):
        """Yields the list of paths touched in the block; on leaving, nothing outside the store
        was touched (opened, listed, created, moved, removed) and no entry outside it changed."""
        global _touched
        before = self.outside_files()
        _touched = touched = []
        try:
            yield touched
        finally:
            _touched = None
        outside = [path for path in touched if not self.is_inside(path)]
        assert not outside, f"touched outside the store: {outside}"
        assert self.outside_files() == before, "an entry outside the store changed"


# Strategies -------------------------------------------------------------------------------------
NAME = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-.", min_size=1, max_size=12).filter(
    lambda name: name not in (".", "..") and not name.startswith(".partial-") and name not in FIXTURE_NAMES)


def legitimate_keys() -> st.SearchStrategy[str]:
    """Relative paths of plain names, 1 to 5 deep (names like '...', '..pdf' or '.x' included)."""
    return st.lists(NAME, min_size=1, max_size=5).map("/".join)


def _with_noise(segments: list[str], draw) -> list[str]:
    """The segments with `.` and empty ones (`//`) put in at random places."""
    noise = draw(st.lists(st.tuples(st.integers(0, len(segments)), st.sampled_from([".", ""])), max_size=3))
    segments = list(segments)
    for at, segment in sorted(noise, reverse=True):
        segments.insert(at, segment)
    return segments


@st.composite
def climbing_keys(draw) -> str:
    """`..` at any depth: down into names, up past the store (never past the sandbox), down again."""
    down = draw(st.lists(NAME, max_size=3))
    up = draw(st.integers(1, DEPTH))
    tail = draw(st.sampled_from([["secret.pdf"], ["outside", "secret.pdf"], ["outside", "new.pdf"], ["new.pdf"],
                                 ["outside", "sub"], []]))
    at = draw(st.integers(0, len(down)))  # the climb may come first, last or between the names
    segments = down[:at] + [".."] * (up + at) + down[at:] + tail
    return "/".join(_with_noise(segments, draw))


@st.composite
def absolute_keys(draw, sandbox: Sandbox) -> str:
    target = draw(st.sampled_from([
        sandbox.top / "secret.pdf", sandbox.root.parent / "outside" / "secret.pdf",
        sandbox.root.parent / "outside" / "new.pdf", sandbox.root / "inside.pdf", Path("/etc/passwd"),
        Path("/nonexistent/new.pdf")]))
    segments = _with_noise(str(target).lstrip("/").split("/"), draw)
    return "/" * draw(st.integers(1, 3)) + "/".join(segments)


@st.composite
def keys_with_a_nul(draw) -> str:
    key = draw(legitimate_keys())
    at = draw(st.integers(0, len(key)))
    return key[:at] + "\x00" + key[at:]


def refused_keys(sandbox: Sandbox) -> st.SearchStrategy[str]:
    """Keys every local store must refuse: absolute, climbing, through a link that leads out (or
    loops), empty, with a NUL byte."""
    return st.one_of(absolute_keys(sandbox), climbing_keys(), st.sampled_from(LINKS_OUT), st.just(""),
                     keys_with_a_nul())


ENCODED = ["%2e%2e/outside/secret.pdf", "%2e%2e%2foutside%2fsecret.pdf", "..%2f..%2fsecret.pdf", "%2fetc%2fpasswd",
           "..\\outside\\secret.pdf", "..\\..\\secret.pdf", "\uff0e\uff0e/outside/secret.pdf", "\u2025/secret.pdf",
           "..%00/secret.pdf", "%252e%252e/secret.pdf", ".%2e/secret.pdf", "%c0%ae%c0%ae/secret.pdf",
           "file:%2F%2F%2Fetc%2Fpasswd", "~/secret.pdf", "$HOME/secret.pdf", "...", "..../secret.pdf"]


@st.composite
def encoded_keys(draw) -> str:
    """Escapes written in encodings a file system does not decode: each is a literal name inside
    the store, which a store may accept; it must not lead anywhere else."""
    return "/".join(draw(st.lists(NAME, max_size=2)) + [draw(st.sampled_from(ENCODED))])
