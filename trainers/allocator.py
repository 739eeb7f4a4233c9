"""Keep freed memory in the process: the CPU fast path for training with glibc's malloc.

glibc returns every large freed block (activations, gradients, logits: anything above its
mmap threshold, 128 KiB to 32 MiB) to the kernel at once, and the next step faults the same pages
back in, zero-filled. On this project's CPU machines (small VMs) those page faults cost more than
the arithmetic: a SmolLM2-135M training step on 512 tokens took 3.37 s with glibc's defaults
and 2.25 s after :func:`keep_freed_memory` (``benchmarks/cpu_allocator.py``, side by side in
fresh processes), with the kernel busy 50-80% of the time before.

The cost is resident memory: the process keeps its peak heap instead of shrinking after it.
Training processes reach that peak every step anyway.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

__all__ = ["keep_freed_memory"]

logger = logging.getLogger(__name__)

# mallopt parameters from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_TRIM_THRESHOLD = 2**31 - 1  # the largest value mallopt takes (an int): never trim the heap top below 2 GiB

_applied = False


def keep_freed_memory() -> bool:
    """Make glibc's malloc reuse freed memory instead of unmapping it; returns whether it applied.

    Sets ``M_MMAP_MAX`` to 0 (large blocks come from the heap, which keeps freed blocks for reuse)
    and ``M_TRIM_THRESHOLD`` to its maximum (freed memory at the heap's top stays). It affects
    only allocations made after the call, so call it before loading models. A no-op returning
    False outside Linux with glibc, or when ``TRAINERS_KEEP_FREED_MEMORY=0``. Calling it again is
    harmless.
    """
    global _applied
    if _applied:
        return True
    if os.environ.get("TRAINERS_KEEP_FREED_MEMORY", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    _applied = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
    if not _applied:
        logger.warning("mallopt refused the settings: freed memory goes back to the kernel as usual")
    return _applied
