"""A live agent's memory: start-up's pages of read-only file mappings go back to the kernel; a batch's buffers come back from the heap."""

from __future__ import annotations

import mmap
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pagemap import resident_pages

from agent.runtime.memory import file_mappings, release_file_pages

PAGES = 64


def _file(path: Path) -> Path:
    path.write_bytes(bytes(range(256)) * (PAGES * mmap.PAGESIZE // 256))
    with path.open("rb+") as f:
        os.fsync(f.fileno())  # clean pages: the kernel reclaims a clean page at once, a dirty one only after writeback
    return path


def test_read_only_file_pages_are_given_back_and_read_again_when_used(tmp_path: Path) -> None:
    with _file(tmp_path / "code").open("rb") as f, _file(tmp_path / "data").open("r+b") as g:
        code = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ)  # a library's text
        data = mmap.mmap(g.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)  # its .data
        total = sum(code[i * mmap.PAGESIZE] for i in range(PAGES))  # start-up touches every page
        for i in range(PAGES):
            data[i * mmap.PAGESIZE] = 1
        assert (resident_pages(code), resident_pages(data)) == (PAGES, PAGES)
        assert release_file_pages() > 0
        assert (resident_pages(code), resident_pages(data)) == (0, PAGES)  # the written copy is the process's own: kept
        # What is used again comes back, from the page cache: the page and those the kernel maps around a fault
        # (fault_around_bytes, 64 KiB by default), not the file.
        assert code[5 * mmap.PAGESIZE + 7] == 7 and 1 <= resident_pages(code) <= 65536 // mmap.PAGESIZE
        assert total == 0 and data[0] == 1
        code.close()
        data.close()


def test_a_maps_file_that_cannot_be_read_releases_nothing(tmp_path: Path) -> None:
    assert release_file_pages(str(tmp_path / "missing")) == 0


@pytest.mark.parametrize(
    ("line", "taken"),
    [
        ("55d0-55e0 r--p 00000000 fe:00 12 /usr/bin/python3.11", [(0x55D0, 0x55E0)]),
        ("55e0-55f0 r-xp 00001000 fe:00 12 /usr/lib/x86_64-linux-gnu/libc.so.6", [(0x55E0, 0x55F0)]),
        ("55f0-5600 rw-p 00002000 fe:00 12 /usr/lib/x86_64-linux-gnu/libc.so.6", []),  # written data: the process's own
        ("5600-5610 rw-s 00000000 00:08 4 socket:[8374]", []),  # the capture ring
        ("5610-5620 r--s 00000000 00:05 9 /dev/shm/x", []),  # shared: another process's pages as much as ours
        ("5620-5630 rw-p 00000000 00:00 0 [heap]", []),
        ("5630-5640 r--p 00000000 00:00 0", []),  # anonymous
    ],
)
def test_only_read_only_private_file_mappings_are_taken(line: str, taken: list[tuple[int, int]]) -> None:
    assert file_mappings(line + "\n") == taken


# In a process of its own: the allocator's settings are the whole process's.
_ALLOCATOR = """
import ctypes, resource, sys
import numpy as np
from agent.runtime.memory import compact_allocator

class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Mallinfo2
compact_allocator(int(sys.argv[1]))
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
mapped = libc.mallinfo2().hblkhd  # what the interpreter and numpy mapped at start
first = np.ones(3 << 20, np.uint8)  # a batch's bytes
in_map = libc.mallinfo2().hblkhd - mapped
del first
free = libc.mallinfo2().fordblks
before = faults()
second = np.ones(3 << 20, np.uint8)  # the next batch's
refaults = faults() - before
big = np.ones(24 << 20, np.uint8)  # more than a batch: mapped, and unmapped when freed
print(in_map, free >> 20, refaults, (libc.mallinfo2().hblkhd - mapped) >> 20)
"""


def test_a_batch_buffer_is_reused_from_the_heap_without_faulting_its_pages_again() -> None:
    out = subprocess.run([sys.executable, "-c", _ALLOCATOR, str(4 << 20)], capture_output=True, text=True, check=True).stdout.split()
    in_map, free_mib, refaults, mapped_mib = map(int, out)
    assert in_map == 0  # under the 8 MiB kept for batches: from the heap, not a mapping of its own
    assert free_mib >= 3  # freed, and kept: the heap is not trimmed below what a batch needs
    assert refaults < 16  # the next batch's bytes land on resident pages (768 pages if mapped afresh)
    assert mapped_mib == 24


def test_a_buffer_over_what_is_kept_is_mapped_and_given_back_at_once() -> None:
    out = subprocess.run([sys.executable, "-c", _ALLOCATOR, str(512 << 10)], capture_output=True, text=True, check=True).stdout.split()
    in_map, free_mib, refaults, _ = map(int, out)
    assert in_map >= 3 << 20 and free_mib < 1 and refaults >= 3 * 256  # 1 MiB kept: mapped, unmapped, faulted in again
