"""A live agent's memory: start-up's pages of read-only file mappings go back to the kernel; writable mappings keep theirs."""

from __future__ import annotations

import mmap
import os
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
