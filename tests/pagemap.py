"""Which pages of a buffer the kernel has mapped for this process: /proc/self/pagemap's present bit."""

from __future__ import annotations

import mmap
import os

import numpy as np


def resident_pages(buffer: np.ndarray | mmap.mmap) -> int:
    """Pages of the buffer's memory mapped for this process (/proc/self/pagemap, bit 63)."""
    a = buffer if isinstance(buffer, np.ndarray) else np.frombuffer(buffer, np.uint8)
    start = a.__array_interface__["data"][0]
    first, last = start // mmap.PAGESIZE, (start + a.nbytes - 1) // mmap.PAGESIZE
    with open(f"/proc/{os.getpid()}/pagemap", "rb") as f:
        f.seek(first * 8)
        entries = np.frombuffer(f.read((last - first + 1) * 8), np.uint64)
    return int((entries >> np.uint64(63)).sum())
