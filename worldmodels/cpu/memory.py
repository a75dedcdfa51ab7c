"""Keep freed memory inside the process, so large tensors are not page-faulted in afresh every update.

glibc's malloc serves blocks above its mmap threshold (at most 32 MiB) with fresh `mmap`s and returns
them on free. A size12m update allocates hundreds of such tensors (imagined features of 1024 x 16 x 2560
floats are 168 MB), so each is zero-filled by the kernel, a page at a time, before it is written:
measured on the 2-core development CPU, a fresh (1024, 16, 256) product took 4x as long as one into
memory already touched, and the update spent more time in those faults than in its elementwise math.
Serving every block from the heap and never trimming it makes the second and later updates reuse
pages the process already owns. The cost: the process keeps its peak memory until it exits.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4  # mallopt parameters, from glibc's malloc.h


def keep_freed_memory() -> bool:
    """Tune glibc's malloc as above; returns whether it applied (False off Linux or without glibc)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0) and mallopt(M_TRIM_THRESHOLD, 2**31 - 1) and mallopt(M_TOP_PAD, 256 << 20))
