"""The ``pktagent`` command: run, replay, check-config.

Only pktagent's own errors are caught, and each is printed as one line, ``Type: message``,
with exit status 1; argument mistakes exit 2 with argparse's usage line.
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
from collections.abc import Sequence
from typing import Any

from agent import __version__, labels
from agent import config as config_mod
from agent._exceptions import ConfigError, PktagentError
from agent.config import Config
from agent.snapshot import Snapshot

log = logging.getLogger("pktagent")


# -- config from file and flags -------------------------------------------------------------


def resolve_config(args: argparse.Namespace) -> Config:
    """The config file (or the defaults), with the flags laid over it."""
    cfg = config_mod.load(args.config) if getattr(args, "config", None) else Config()
    capture: dict[str, Any] = {}
    if getattr(args, "interface", None):
        capture["interfaces"] = tuple(args.interface)
        capture["pcap"] = ()
    if getattr(args, "pcap", None):
        capture["pcap"] = tuple(args.pcap)
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
        if not 0 < args.sampling_rate <= 1:
            raise ConfigError(f"--sampling-rate: must be a number in (0, 1], got {args.sampling_rate}")
        cfg = cfg.replace("pipeline", sampling_rate=args.sampling_rate)
    if getattr(args, "listen", None):
        config_mod.listen_address(args.listen, "--listen")  # names the flag, not a config key
        cfg = cfg.replace("web", listen=args.listen)
    if getattr(args, "web_config_file", None):
        cfg = cfg.replace("web", config_file=args.web_config_file)
    if getattr(args, "state_dir", None):
        cfg = cfg.replace(state_dir=args.state_dir)
    return cfg


# -- run --------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from agent.app import Agent
    from agent.capture._pcapy import compact_allocator

    compact_allocator()  # before any thread starts: arenas are per thread

    agent = Agent(resolve_config(args))
    stop, hup = threading.Event(), threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    signal.signal(signal.SIGHUP, lambda signum, frame: hup.set())  # reload: the file again, with the same flags
    agent.serve(stop, reload=lambda: resolve_config(args), hup=hup)
    return 0


# -- replay -----------------------------------------------------------------------------------


def snapshot_json(s: Snapshot) -> dict[str, Any]:
    """The final figures of a replay as plain JSON."""
    interfaces = {}
    for k, name in enumerate(s.interfaces):
        traffic = [
            {
                "network": labels.NETWORKS[n],
                "transport": labels.TRANSPORTS[t],
                "direction": labels.DIRECTIONS[d],
                "packets": float(s.traffic_packets[k, n, t, d]),
                "bytes": float(s.traffic_bytes[k, n, t, d]),
            }
            for n, t, d in zip(*s.traffic_packets[k].nonzero())
        ]
        interfaces[name] = {
            "packets_captured": int(s.captured[k]),
            "packets_processed": int(s.processed[k]),
            "packets_duplicate": int(s.duplicate[k]),
            "packets_sampled_out": int(s.sampled_out[k]),
            "unsupported_link_packets": int(s.unsupported_link[k]),
            "packets_dropped": dict(zip(labels.DROP_STAGES, map(int, s.dropped[k]))),
            "traffic_packets": float(s.traffic_packets[k].sum()),
            "traffic_bytes": float(s.traffic_bytes[k].sum()),
            "traffic": traffic,
            "decode_errors": {f"{layer}/{reason}": int(v) for (layer, reason), v in zip(labels.DECODE_ERRORS, s.decode_errors[k]) if v},
        }
    return {
        "version": s.version,
        "interfaces": interfaces,
        "flows": {
            "started": dict(zip(labels.FLOW_TRANSPORTS, map(int, s.flows_started))),
            "ended": {tr: dict(zip(labels.FLOW_END_REASONS, map(int, row))) for tr, row in zip(labels.FLOW_TRANSPORTS, s.flows_ended)},
            "active": dict(zip(labels.FLOW_TRANSPORTS, map(int, s.flows_active))),
        },
        "caches": {c.name: {"hits": c.hits, "misses": c.misses, "entries": c.entries, "evictions": c.evictions} for c in s.caches},
        "processing": {"batches": s.batch_seconds.count, "busy_seconds": s.busy_seconds},
    }


def _progress(engine: Any, total_files: int, done: threading.Event) -> None:
    started = time.monotonic()
    while not done.wait(0.25):
        packets = sum(s.captured for s in engine.states)
        files = sum(s.finished for s in engine.states)
        rate = packets / max(time.monotonic() - started, 1e-9)
        sys.stderr.write(f"\rreplay: {files}/{total_files} files, {packets:,} packets, {rate / 1e6:.2f}M packets/s ")
        sys.stderr.flush()
    sys.stderr.write("\r\033[K")
    sys.stderr.flush()


def cmd_replay(args: argparse.Namespace) -> int:
    from agent import build_labels
    from agent.capture._pcapy import tune_allocator
    from agent.replay import finish, replay_engine

    tune_allocator()  # a replay at full speed; `run` keeps glibc's defaults, which give memory back

    cfg = resolve_config(args).replace("capture", pcap=tuple(args.files), interfaces=(), loop=False)
    writer = None
    if args.state_dir:
        from agent.app import open_store

        writer = open_store(cfg)
    engine = replay_engine(cfg, args.files, writer.store.load() if writer else ())
    done = threading.Event()
    bar = None
    if sys.stderr.isatty():
        bar = threading.Thread(target=_progress, args=(engine, len(args.files), done), daemon=True)
        bar.start()
    engine.start()
    try:
        engine.wait()
    finally:
        done.set()
        if bar is not None:
            bar.join()
        engine.close()
    if engine.failure is not None:
        raise engine.failure
    finish(engine)
    if writer is not None:
        writer.registry = engine.pipeline.registry
        writer.stop()  # writes what the replay learned
    snap = engine.snapshot(**build_labels())
    if args.format == "json":
        sys.stdout.write(json.dumps(snapshot_json(snap), indent=2) + "\n")
    else:
        sys.stdout.write(exposition(snap).decode())
    return 0


def exposition(snap: Snapshot) -> bytes:
    """The Prometheus text exposition of one snapshot."""
    from prometheus_client import CollectorRegistry, generate_latest

    from agent.metrics import SnapshotCollector

    registry = CollectorRegistry()
    registry.register(SnapshotCollector(lambda: snap))
    return bytes(generate_latest(registry))


def cmd_devices(args: argparse.Namespace) -> int:
    from agent.registry import SOURCES
    from agent.store import read_devices

    cfg = resolve_config(args)
    devices = read_devices(cfg.state_dir)
    by_id = {d.id: d for d in devices}

    def name(d: Any) -> tuple[str, str]:
        """The best name and its source, following a randomised MAC's link to the device it belongs to."""
        for _ in range(4):
            if d is None:
                break
            if d.name is not None:
                return d.name, next(s for s in SOURCES if s in d.names)
            d = by_id.get(d.linked_to) if d.linked_to is not None else None
        return "", ""

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
    if cfg.capture.bpf_filter:
        import pcapy

        try:  # as libpcap compiles it for an Ethernet capture
            pcapy.compile(1, cfg.capture.snaplen, cfg.capture.bpf_filter, 1, 0)
        except pcapy.PcapError as e:
            raise ConfigError(f"{args.file}: config key capture.bpf_filter: libpcap rejects {cfg.capture.bpf_filter!r}: {e}") from None
    if cfg.web.config_file:
        from agent import web

        web.load(cfg.web.config_file)
    if cfg.otlp.protocol == "grpc":
        from agent.otlp import grpc_available

        if not grpc_available():
            raise ConfigError(f"{args.file}: config key otlp.protocol: grpc needs the gRPC exporter: pip install 'pktagent[grpc]'")
    print(f"{args.file}: valid")
    return 0


# -- entry point ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pktagent", description="Network traffic exporter: captures packets and serves Prometheus metrics.")
    p.add_argument("--version", action="version", version=f"pktagent {__version__}")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"], help="what to log to stderr (default: info)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="capture live (or replay captures at their pace) and serve /metrics and /health")
    run.add_argument("--config", metavar="FILE", help="YAML config file")
    run.add_argument("--interface", "-i", action="append", metavar="IFACE", help="capture on IFACE (repeat for several); default: the default-route interface")
    run.add_argument("--pcap", nargs="+", metavar="FILE", help="replay capture files at their recorded pace instead of capturing live")
    run.add_argument("--loop", action="store_true", help="start the --pcap files over when they end")
    run.add_argument("--listen", metavar="HOST:PORT", help=f"where to serve /metrics (default 0.0.0.0:{config_mod.DEFAULT_PORT})")
    run.add_argument("--web.config.file", dest="web_config_file", metavar="FILE", help="exporter-toolkit web config: TLS and basic auth")
    run.add_argument("--bpf", metavar="EXPR", help="BPF capture filter, e.g. 'not port 22'")
    run.add_argument("--sampling-rate", type=float, metavar="R", help="keep this share of packets, 0 < R <= 1")
    run.add_argument("--state-dir", metavar="DIR", help="where the agent keeps its state")
    run.add_argument("--workers", type=int, metavar="N", help="capture processes per interface (PACKET_FANOUT_HASH)")
    run.set_defaults(func=cmd_run)

    replay = sub.add_parser("replay", help="read capture files at full speed and print the final metrics")
    replay.add_argument("files", nargs="+", metavar="FILE", help="pcap or pcapng files")
    replay.add_argument("--config", metavar="FILE", help="YAML config file")
    replay.add_argument("--format", choices=["prometheus", "json"], default="prometheus", help="output format (default: prometheus)")
    replay.add_argument("--bpf", metavar="EXPR", help="BPF filter applied while reading")
    replay.add_argument("--state-dir", metavar="DIR", help="keep the devices learned from the files in DIR (see `pktagent devices`)")
    replay.set_defaults(func=cmd_replay)

    devices = sub.add_parser("devices", help="list the devices the agent has learned")
    devices.add_argument("--config", metavar="FILE", help="YAML config file (for its state_dir)")
    devices.add_argument("--state-dir", metavar="DIR", help="where the agent keeps its state (default: the config's, /var/lib/pktagent)")
    devices.add_argument("--format", choices=["table", "json"], default="table", help="output format (default: table)")
    devices.set_defaults(func=cmd_devices)

    check = sub.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("file", metavar="FILE")
    check.set_defaults(func=cmd_check_config)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level.upper()), format="pktagent: %(levelname)s: %(message)s", stream=sys.stderr)
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
