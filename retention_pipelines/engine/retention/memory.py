"""Keep a long run's memory where a short run's is.

glibc's malloc serves large blocks (a batch's rows, its JSON lines, an archive object: megabytes)
by mmap and gives them back on free, but only up to a threshold it raises each time such a block
is freed: after a few batches they come from the heap instead, whose high-water mark a long run
keeps raising (a 1,000,000-row archive run peaked 1.18× a 100,000-row one). A fixed threshold
keeps them on mmap: 1.04×. There is no library for this (it is one mallopt call); elsewhere than
glibc (macOS, musl) nothing is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3  # glibc's malloc.h
LARGE_BLOCK_BYTES = 128 * 1024  # glibc's own starting threshold, kept fixed

_done = False


def give_large_blocks_back() -> None:
    """Once per process: large blocks always by mmap, returned to the system when freed."""
    global _done
    if _done:
        return
    _done = True
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = getattr(libc, "mallopt", None)
    except OSError:
        mallopt = None
    if mallopt is not None:
        mallopt(M_MMAP_THRESHOLD, LARGE_BLOCK_BYTES)
