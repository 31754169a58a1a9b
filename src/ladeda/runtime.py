"""Process settings for CPU training: keep glibc from returning large tensors' memory to the OS every step."""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
THRESHOLD = 1 << 30  # 1 GiB: activations of a CPU-sized batch stay on the heap and are reused


def tune_allocator() -> bool:
    """Raise glibc's mmap and trim thresholds (as MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ would).

    Large tensors are otherwise mmapped and unmapped on every step, and the page faults that follow
    cost a large share of CPU training time. Returns False (and changes nothing) off glibc.
    """
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, THRESHOLD))
