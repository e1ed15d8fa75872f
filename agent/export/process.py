"""The standard ``process_*`` families every Prometheus client exports, read from /proc.

Names and meanings are those of the client libraries (client_golang's process collector):
CPU time, virtual and resident memory, start time, open and allowed file descriptors. They
describe the process serving the scrape; ``pktagent_resident_memory_bytes`` adds up the whole
agent's. Where /proc is missing (not Linux) there are none.

>>> names = [name for name, *_ in process_families("/nonexistent")]
>>> names
[]
"""

from __future__ import annotations

import os
import resource

from agent.export.metrics import Written

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = resource.getpagesize()


def _boot_time(proc: str) -> float:
    with open(f"{proc}/stat") as f:
        for line in f:
            if line.startswith("btime "):
                return float(line.split()[1])
    raise ValueError("no btime")


def process_families(proc: str = "/proc") -> list[Written]:
    """The ``process_*`` families of this process, as written (none when /proc cannot be read)."""
    try:
        with open(f"{proc}/self/stat") as f:
            fields = f.read().rpartition(")")[2].split()  # after the command name, which may hold spaces
        started = _boot_time(proc) + int(fields[19]) / _TICKS
        open_fds = len(os.listdir(f"{proc}/self/fd"))
    except (OSError, ValueError, IndexError):
        return []
    cpu = (int(fields[11]) + int(fields[12])) / _TICKS
    soft_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]

    def one(name: str, help_: str, kind: str, value: float) -> Written:
        return name, help_, kind, [(name, (), value)]

    return [
        one("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", "counter", cpu),
        one("process_virtual_memory_bytes", "Virtual memory size in bytes.", "gauge", int(fields[20])),
        one("process_resident_memory_bytes", "Resident memory size in bytes.", "gauge", int(fields[21]) * _PAGE),
        one("process_start_time_seconds", "Start time of the process since unix epoch in seconds.", "gauge", started),
        one("process_open_fds", "Number of open file descriptors.", "gauge", open_fds),
        one("process_max_fds", "Maximum number of open file descriptors.", "gauge", float("inf") if soft_limit == resource.RLIM_INFINITY else soft_limit),
    ]
