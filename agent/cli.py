"""The ``pktagent`` command: run, replay, devices, check-config.

Only pktagent's own errors are caught, and each is printed as one line, ``Type: message``,
with exit status 1; argument mistakes (a bad flag value included) exit 2 with one line naming
the flag. Each command imports what it needs only, so ``pktagent --version`` starts quickly.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from agent import config as config_mod
from agent.config import Config
from agent.errors import ConfigError, PktagentError

if TYPE_CHECKING:
    from agent.base.snapshot import Snapshot
from agent.version import VersionAction

log = logging.getLogger("pktagent")


# -- config from file and flags -------------------------------------------------------------


def resolve_config(args: argparse.Namespace) -> Config:
    """The config file (or the defaults), with the flags laid over it."""
    cfg = config_mod.load(args.config) if getattr(args, "config", None) else Config()
    capture: dict[str, Any] = {}
    if getattr(args, "interface", None):
        capture["interfaces"] = once(args.interface, "--interface")
        capture["pcap"] = ()
    if getattr(args, "pcap", None):
        capture["pcap"] = once(args.pcap, "--pcap")
        capture["interfaces"] = ()
    if getattr(args, "loop", False):
        capture["loop"] = True
    if getattr(args, "bpf", None) is not None:
        capture["bpf_filter"] = args.bpf
    if getattr(args, "workers", None) is not None:
        capture["workers"] = args.workers
    if capture:
        cfg = cfg.replace("capture", **capture)
    if getattr(args, "sampling_rate", None) is not None:
        cfg = cfg.replace("pipeline", sampling_rate=args.sampling_rate)
    if getattr(args, "listen", None):
        cfg = cfg.replace("web", listen=args.listen)
    if getattr(args, "telemetry_path", None):
        cfg = cfg.replace("web", telemetry_path=args.telemetry_path)
    if getattr(args, "web_config_file", None):
        cfg = cfg.replace("web", config_file=args.web_config_file)
    if getattr(args, "state_dir", None):
        cfg = cfg.replace(state_dir=args.state_dir)
    return cfg


def once(items: Sequence[str], flag: str) -> tuple[str, ...]:
    """Each interface or file once: named twice it would be two identical series (invalid exposition)."""
    seen: dict[str, str] = {}
    for item in items:
        key = item if flag == "--interface" else os.path.realpath(item)
        if key in seen:
            same = "named twice" if item == seen[key] else f"the same file as {seen[key]}"
            log.warning("%s: %s is %s: counting it once", flag, item, same)
            continue
        seen[key] = item
    return tuple(seen.values())


# -- run --------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from agent.runtime.agent import Agent
    from agent.runtime.memory import compact_allocator
    from agent.runtime.privileges import harden

    config = resolve_config(args)
    compact_allocator(config.pipeline.batch_bytes)  # before any thread starts: arenas are per thread
    harden()  # no_new_privs, in this process and in every worker it forks
    agent = Agent(config)
    stop, hup = threading.Event(), threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    signal.signal(signal.SIGHUP, lambda signum, frame: hup.set())  # reload: the file again, with the same flags
    agent.serve(stop, reload=lambda: resolve_config(args), hup=hup)
    return 0


# -- replay -----------------------------------------------------------------------------------


def progress_line(files_done: int, sizes: Sequence[int], bytes_read: int, packets: int, rate: float, left: float | None) -> str:
    """The replay's progress: files done, share of the bytes read, packets, rate, time left.

    >>> progress_line(1, [1000, 3000], 2000, 12345, 1.5e6, 65.0)
    'replay: 1/2 files, 50% of 4.0 KB, 12,345 packets, 1.50M packets/s, 1m05s left'
    """
    total = max(sum(sizes), 1)
    share = min(bytes_read / total, 1.0)
    line = f"replay: {files_done}/{len(sizes)} files, {share:.0%} of {_size(total)}, {packets:,} packets"
    if rate > 0:
        line += f", {rate / 1e6:.2f}M packets/s"
    if left is not None and files_done < len(sizes):
        line += f", {_duration(left)} left"
    return line


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return ""  # pragma: no cover


def _duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _progress(engine: Any, sizes: Sequence[int], done: threading.Event) -> None:
    total = sum(sizes)

    def line() -> str:
        states = engine.states
        files = sum(s.finished for s in states)
        # Files read to the end count whole; the one being read by the bytes of its records.
        read = sum(size if s.finished else min(s.bytes_read, size) for s, size in zip(states, sizes))
        packets = sum(s.captured for s in states)
        # Rate and time left count from the first batch: opening files and forking readers is not reading.
        starts = [s.first_batch_at for s in states if s.first_batch_at]
        seconds = time.monotonic() - min(starts) if starts else 0.0
        rate = packets / seconds if seconds > 0 else 0.0
        left = seconds * (total - read) / read if read and seconds > 0 else None
        return progress_line(files, sizes, read, packets, rate, left)

    while not done.wait(0.25):
        sys.stderr.write(f"\r{line()}\033[K")
        sys.stderr.flush()
    sys.stderr.write(f"\r{line()}\033[K\n")  # the last line stays: N/N files
    sys.stderr.flush()


def cmd_replay(args: argparse.Namespace) -> int:
    from agent.runtime.memory import tune_allocator
    from agent.runtime.replay import replay_engine, run
    from agent.version import build_labels

    tune_allocator()  # a replay at full speed; `run` bounds the free memory it keeps
    files = once(args.files, "replay")
    cfg = resolve_config(args).replace("capture", pcap=files, interfaces=(), loop=False)
    writer = None
    if args.state_dir:
        from agent.runtime.agent import open_store

        writer = open_store(cfg)
    engine = replay_engine(cfg, files, writer.store.load() if writer else ())
    sizes = [os.path.getsize(f) for f in files]
    run(engine, (lambda done: _progress(engine, sizes, done)) if sys.stderr.isatty() else None)
    if writer is not None:
        writer.registry = engine.pipeline.registry
        writer.stop()  # writes what the replay learned
    snap = engine.snapshot(**build_labels())
    if args.format == "json":
        from agent.export.report import snapshot_json

        sys.stdout.write(json.dumps(snapshot_json(snap), indent=2) + "\n")
    else:
        sys.stdout.write(exposition(snap).decode())
    return 0


def exposition(snap: Snapshot) -> bytes:
    """The Prometheus text exposition of one snapshot."""
    from agent.export.metrics import Exposition

    return Exposition(lambda: snap).render()


def cmd_devices(args: argparse.Namespace) -> int:
    from agent.naming.registry import SOURCES, named
    from agent.naming.store import read_devices

    cfg = resolve_config(args)
    devices = read_devices(cfg.state_dir)
    by_id = {d.id: d for d in devices}

    def name(d: Any) -> tuple[str, str]:
        """The best name and its source, following a randomised MAC's link to the device it belongs to."""
        found = named(by_id, d.id)
        if found is None or found.name is None:
            return "", ""
        return found.name, next(s for s in SOURCES if s in found.names)

    rows: list[dict[str, Any]] = []
    for d in devices:
        best, source = name(d)
        rows.append(
            {
                "id": d.id,
                "name": best or None,
                "name_source": source or None,
                "names": d.names,
                "macs": sorted(d.macs),
                "addresses": sorted(d.addresses, key=lambda a: -d.addresses[a]),
                "client_id": d.client_id,
                "vendor_class": d.vendor_class,
                "linked_to": d.linked_to,
                "first_seen": _iso(d.first_seen),
                "last_seen": _iso(d.last_seen),
            }
        )
    if args.format == "json":
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return 0
    head = ("ID", "NAME", "SOURCE", "MACS", "ADDRESSES", "LAST SEEN")
    table = [head] + [
        (
            str(r["id"]) + (f" -> {r['linked_to']}" if r["linked_to"] else ""),
            r["name"] or "-",
            r["name_source"] or "-",
            ", ".join(r["macs"]) or "-",
            ", ".join(r["addresses"]) or "-",
            r["last_seen"],
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    if not rows:
        print(f"(no devices known yet in {cfg.state_dir})")
    return 0


def _iso(seconds: float) -> str:
    import datetime

    if not seconds:
        return "-"
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg = config_mod.load(args.file)
    for warning in missing_interfaces(cfg):
        print(f"pktagent: warning: {args.file}: {warning}", file=sys.stderr)
    if cfg.capture.bpf_filter:
        import pcapy

        try:  # as libpcap compiles it for an Ethernet capture
            pcapy.compile(1, cfg.capture.snaplen, cfg.capture.bpf_filter, 1, 0)
        except pcapy.PcapError as e:
            raise ConfigError(f"{args.file}: config key capture.bpf_filter: libpcap rejects {cfg.capture.bpf_filter!r}: {e}") from None
    if cfg.web.config_file:
        from agent.export import web

        web.load(cfg.web.config_file)
    if cfg.otlp.protocol == "grpc":
        from agent.export.otlp import grpc_available

        if not grpc_available():
            raise ConfigError(f"{args.file}: config key otlp.protocol: grpc needs the gRPC exporter: pip install 'pktagent[grpc]'")
    print(f"{args.file}: valid")
    return 0


def missing_interfaces(cfg: Config, present: Sequence[str] | None = None) -> list[str]:
    """Warnings for the configured interfaces this host does not have (the config may be meant for another host)."""
    import socket

    have = list(present) if present is not None else [name for _, name in socket.if_nameindex()]
    return [
        f"config key capture.interfaces[{i}]: this host has no interface {name!r} (it has {', '.join(have) or 'none'}); "
        "pktagent run would refuse to start on this host"
        for i, name in enumerate(cfg.capture.interfaces)
        if name not in have
    ]


# -- entry point ------------------------------------------------------------------------------


class _Formatter(argparse.HelpFormatter):
    """argparse's help layout, as wide as the terminal, found without ``shutil``.

    argparse builds a formatter for every argument it adds, and its default asks ``shutil``
    for the width: that brings bz2 and lzma along, 0.6 MiB of a live agent's memory.
    """

    def __init__(self, prog: str) -> None:
        try:
            columns = int(os.environ["COLUMNS"])
        except (KeyError, ValueError):
            try:
                columns = os.get_terminal_size(sys.__stdout__.fileno() if sys.__stdout__ else 1).columns
            except OSError:
                columns = 80
        super().__init__(prog, width=max(columns - 2, 20))


class _Parser(argparse.ArgumentParser):
    """argparse with one line per mistake: what is wrong, and where to read more; exit status 2."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)  # subcommands' parsers too: they are of this class
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        if "COMMAND" in message:  # `pktagent` alone: the usage is the answer
            self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _bounded(section: type, name: str) -> Callable[[str], Any]:
    """A flag type for config field ``section.name``: its type and range, in the config's wording."""
    import dataclasses
    import typing

    f = next(f for f in dataclasses.fields(section) if f.name == name)
    kind = typing.get_type_hints(section)[name]
    low, high = f.metadata["low"], f.metadata["high"]

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(config_mod.range_message(kind, low, high, text if value is None else value))
        return value

    return parse


def _listen(text: str) -> str:
    try:
        config_mod.listen_address(text, "")
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix(": ")) from None
    return text


def _telemetry_path(text: str) -> str:
    try:
        return config_mod.telemetry_path(text, "")
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix(": ")) from None


def _log_flags(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """--log.level and --log.format, before the command or after it (after wins)."""
    from agent.logs import FORMATS, LEVELS

    # After the command a flag sets its value only when given, so one before the command still counts.
    level: Any = "info" if top else argparse.SUPPRESS
    fmt: Any = None if top else argparse.SUPPRESS
    parser.add_argument("--log.level", "--log-level", dest="log_level", choices=LEVELS, default=level, help="what to log to stderr (default: info)")
    parser.add_argument(
        "--log.format", dest="log_format", choices=FORMATS, default=fmt, help="log lines as logfmt or JSON (default: plain 'pktagent: LEVEL: message')"
    )


def build_parser() -> argparse.ArgumentParser:
    from agent.config import CaptureConfig, PipelineConfig

    p = _Parser(prog="pktagent", description="Network traffic exporter: captures packets and serves Prometheus metrics.")
    p.add_argument("--version", action=VersionAction)
    _log_flags(p, top=True)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    run = sub.add_parser("run", help="capture live (or replay captures at their pace) and serve /metrics and /health")
    run.add_argument("--config", metavar="FILE", help="YAML config file")
    source = run.add_mutually_exclusive_group()
    source.add_argument(
        "--interface", "-i", action="append", metavar="IFACE", help="capture on IFACE (repeat for several); default: the default-route interface"
    )
    source.add_argument("--pcap", nargs="+", metavar="FILE", help="replay capture files at their recorded pace instead of capturing live")
    run.add_argument("--loop", action="store_true", help="start the --pcap files over when they end")
    run.add_argument(
        "--web.listen-address",
        "--listen",
        dest="listen",
        type=_listen,
        metavar="HOST:PORT",
        help=f"where to serve /metrics (default 0.0.0.0:{config_mod.DEFAULT_PORT})",
    )
    run.add_argument("--web.telemetry-path", dest="telemetry_path", type=_telemetry_path, metavar="PATH", help="where to serve the metrics (default /metrics)")
    run.add_argument("--web.config.file", dest="web_config_file", metavar="FILE", help="exporter-toolkit web config: TLS and basic auth")
    run.add_argument("--bpf", metavar="EXPR", help="BPF capture filter, e.g. 'not port 22'")
    run.add_argument("--sampling-rate", type=_bounded(PipelineConfig, "sampling_rate"), metavar="R", help="keep this share of packets, 0 < R <= 1")
    run.add_argument("--state-dir", metavar="DIR", help="where the agent keeps its state")
    run.add_argument("--workers", type=_bounded(CaptureConfig, "workers"), metavar="N", help="capture processes per interface (PACKET_FANOUT_HASH)")
    _log_flags(run, top=False)
    run.set_defaults(func=cmd_run)

    replay = sub.add_parser("replay", help="read capture files at full speed and print the final metrics")
    replay.add_argument("files", nargs="+", metavar="FILE", help="pcap or pcapng files")
    replay.add_argument("--config", metavar="FILE", help="YAML config file")
    replay.add_argument("--format", choices=["prometheus", "json"], default="prometheus", help="output format (default: prometheus)")
    replay.add_argument("--bpf", metavar="EXPR", help="BPF filter applied while reading")
    replay.add_argument("--state-dir", metavar="DIR", help="keep the devices learned from the files in DIR (see `pktagent devices`)")
    _log_flags(replay, top=False)
    replay.set_defaults(func=cmd_replay)

    devices = sub.add_parser("devices", help="list the devices the agent has learned")
    devices.add_argument("--config", metavar="FILE", help="YAML config file (for its state_dir)")
    devices.add_argument("--state-dir", metavar="DIR", help="where the agent keeps its state (default: the config's, /var/lib/pktagent)")
    devices.add_argument("--format", choices=["table", "json"], default="table", help="output format (default: table)")
    _log_flags(devices, top=False)
    devices.set_defaults(func=cmd_devices)

    check = sub.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("file", metavar="FILE")
    _log_flags(check, top=False)
    check.set_defaults(func=cmd_check_config)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from agent import logs

    logs.setup(args.log_level, getattr(args, "log_format", None))
    try:
        result: int = args.func(args)
        return result
    except PktagentError as e:
        print(f"pktagent: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader of our output went away (e.g. `| head`): not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
