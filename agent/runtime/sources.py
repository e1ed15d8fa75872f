"""Where packets come from: live interfaces (the default route's when none is named) or capture files.

The agent and the worker pool both open their sources through here, so neither imports the other.
"""

from __future__ import annotations

from collections.abc import Callable

from agent.capture import Source
from agent.config import Config
from agent.errors import ConfigError


def default_route_interface(route_table: str = "/proc/net/route") -> str:
    """The interface of the IPv4 default route, for capturing when no interface is named."""
    try:
        with open(route_table) as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        lines = []
    for line in lines:
        fields = line.split()
        if len(fields) > 2 and fields[1] == "00000000":
            return fields[0]
    raise ConfigError("there is no default route to find an interface by: name one with --interface IFACE (see `ip link`)")


def openers(cfg: Config, *, pace: bool) -> tuple[list[str], Callable[[int], Source]]:
    """Interface names and a function opening source number i: live interfaces, or capture files."""
    if cfg.capture.pcap:
        from agent.runtime.replay import file_opener  # with the file readers: a live agent does without them

        return file_opener(cfg, cfg.capture.pcap, pace=pace)
    names = live_interfaces(cfg)
    return names, lambda i: open_live(cfg, names, i)


def live_interfaces(cfg: Config) -> list[str]:
    """The interfaces to capture on: those named, or the default route's."""
    return list(cfg.capture.interfaces) or [default_route_interface()]


def open_live(cfg: Config, names: list[str], i: int, fanout_group: int | None = None) -> Source:
    """Open a live capture on interface number ``i`` with the config's settings."""
    from agent.capture.live import LiveSource, block_timeout_ms, ring_bytes

    c = cfg.capture
    return LiveSource(
        names[i],
        index=i,
        snaplen=c.snaplen,
        promiscuous=c.promiscuous,
        buffer_bytes=c.buffer_bytes or ring_bytes(),
        bpf=c.bpf_filter or None,
        block_timeout_ms=block_timeout_ms(cfg.pipeline.batch_window_ms / 1000),
        fanout_group=fanout_group,
        max_bytes=cfg.pipeline.batch_bytes,
    )
