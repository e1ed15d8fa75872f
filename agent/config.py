"""Configuration: every knob the agent has, with its default, checked when the config is built.

The YAML file mirrors ``Config``: top-level sections named after the pipeline stages,
each key a field below. Flags override the file. An invalid value is a ``ConfigError`` that
names the key's path and says what is wrong, e.g.::

    config key flows.max_flows: must be an integer >= 16, got 'lots'

Nothing here depends on the rest of the package except the exception tree.

>>> Config().web.listen
'0.0.0.0:10464'
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.errors import ConfigError

DEFAULT_PORT = 10464
DEFAULT_LOCAL_NETWORKS = (
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "100.64.0.0/10",
    "fc00::/7",
    "fe80::/10",
    "::1/128",
)
_MAC = re.compile(r"^[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}$")
_LABEL_SAFE = re.compile(r"^[A-Za-z0-9_.:@+-]{1,64}$")


def _check(low: float | None = None, high: float | None = None) -> dict[str, Any]:
    return {"low": low, "high": high}


@dataclass(frozen=True)
class CaptureConfig:
    interfaces: tuple[str, ...] = ()  # empty: the interface of the default route
    pcap: tuple[str, ...] = ()  # replay these files at their recorded pace instead
    loop: bool = False  # start the files over when they end
    snaplen: int = field(default=65535, metadata=_check(64, 262144))
    buffer_bytes: int = field(default=0, metadata=_check(0, 1 << 31))  # the kernel ring per handle; 0: sized from the host (capture.ring_bytes)
    promiscuous: bool = False
    bpf_filter: str = ""
    workers: int = field(default=1, metadata=_check(1, 64))  # PACKET_FANOUT_HASH handles per interface
    worker_timeout_seconds: float = field(default=10.0, metadata=_check(0.5, 3600))  # a worker silent this long is failed (the agent stops)


@dataclass(frozen=True)
class PipelineConfig:
    batch_size: int = field(default=8192, metadata=_check(1, 1 << 20))  # a busy link hands on batches three quarters full (agent.capture.live)
    batch_bytes: int = field(default=4 << 20, metadata=_check(1 << 16, 1 << 30))  # a batch is handed on at about this many captured bytes
    # The longest a packet waits before it is counted (plus one batch's processing): a full batch goes sooner.
    batch_window_ms: float = field(default=1000.0, metadata=_check(0.1, 10_000))
    queue_capacity_packets: int = field(default=262144, metadata=_check(1, 1 << 26))
    queue_capacity_bytes: int = field(default=64 << 20, metadata=_check(1 << 16, 1 << 34))  # and the memory it holds
    sampling_rate: float = field(default=1.0, metadata=_check(1e-6, 1.0))


@dataclass(frozen=True)
class DedupConfig:
    window_ms: float = field(default=1.0, metadata=_check(0.0, 60_000))
    max_entries: int = field(default=65536, metadata=_check(16, 1 << 26))


@dataclass(frozen=True)
class DeviceEntry:
    name: str
    macs: tuple[str, ...] = ()
    addresses: tuple[str, ...] = ()


@dataclass(frozen=True)
class DevicesConfig:
    cache_ttl_seconds: float = field(default=300.0, metadata=_check(0.0, 86400 * 365))
    cache_size: int = field(default=4096, metadata=_check(1, 1 << 24))
    inventory: tuple[DeviceEntry, ...] = ()
    max_devices: int = field(default=2000, metadata=_check(16, 1 << 20))  # devices the registry keeps
    series_budget: int = field(default=50, metadata=_check(0, 10000))  # device label values with their own series (0: no per-device series)
    domain_series_budget: int = field(default=50, metadata=_check(0, 10000))  # domain label values with their own series (0: no per-domain series)
    series_ttl_seconds: float = field(default=900.0, metadata=_check(1.0, 86400 * 30))  # a quiet series is dropped after this
    series_rank_seconds: float = field(default=60.0, metadata=_check(1.0, 86400))  # how often the busiest names are ranked for series
    max_domain_addresses: int = field(default=16384, metadata=_check(16, 1 << 24))  # remote addresses with a known domain
    learn_per_batch: int = field(default=256, metadata=_check(0, 1 << 20))  # ARP/DHCP/DNS packets decoded per batch at most
    store_interval_seconds: float = field(default=5.0, metadata=_check(0.1, 3600))  # how often learned devices are written


@dataclass(frozen=True)
class FlowsConfig:
    idle_timeout_seconds: float = field(default=60.0, metadata=_check(0.001, 86400))
    active_timeout_seconds: float = field(default=1800.0, metadata=_check(0.001, 86400 * 7))
    linger_seconds: float = field(default=2.0, metadata=_check(0.0, 3600))
    max_flows: int = field(default=65536, metadata=_check(16, 1 << 24))


@dataclass(frozen=True)
class OtlpConfig:
    """OTLP export; unset fields fall back to the standard OTEL_* environment variables."""

    enabled: bool = False  # also on when OTEL_EXPORTER_OTLP_ENDPOINT or ..._METRICS_ENDPOINT is set
    endpoint: str = ""  # default http://localhost:4318/v1/metrics (HTTP) or localhost:4317 (gRPC)
    protocol: str = ""  # http/protobuf (default) or grpc
    headers: tuple[str, ...] = ()  # "key=value" items, e.g. "authorization=Bearer abc"
    interval_seconds: float = field(default=0.0, metadata=_check(0.0, 86400))  # 0: OTEL_METRIC_EXPORT_INTERVAL or 60 s
    timeout_seconds: float = field(default=0.0, metadata=_check(0.0, 600))  # 0: OTEL_EXPORTER_OTLP_TIMEOUT or 10 s


@dataclass(frozen=True)
class WebConfig:
    listen: str = f"0.0.0.0:{DEFAULT_PORT}"
    config_file: str = ""  # exporter-toolkit web config (TLS, basic auth)
    telemetry_path: str = "/metrics"  # where the metrics are served (--web.telemetry-path)
    max_connections: int = field(default=64, metadata=_check(1, 65536))  # open at once; more are closed at once, counted
    max_connections_per_address: int = field(default=16, metadata=_check(1, 65536))  # open at once from one client address
    read_timeout_seconds: float = field(default=10.0, metadata=_check(0.01, 3600))  # a TLS handshake, a request head each within it
    idle_timeout_seconds: float = field(default=60.0, metadata=_check(0.01, 86400))  # a kept-alive connection waits this long for a request
    write_timeout_seconds: float = field(default=10.0, metadata=_check(0.01, 3600))  # a client this slow to take a response is dropped
    auth_queue: int = field(default=4, metadata=_check(0, 1024))  # requests waiting for a bcrypt check; more get 429 at once


@dataclass(frozen=True)
class Config:
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    devices: DevicesConfig = field(default_factory=DevicesConfig)
    flows: FlowsConfig = field(default_factory=FlowsConfig)
    web: WebConfig = field(default_factory=WebConfig)
    otlp: OtlpConfig = field(default_factory=OtlpConfig)
    local_networks: tuple[str, ...] = DEFAULT_LOCAL_NETWORKS
    host_addresses_local: bool = True  # a live capture's host: its own addresses count as local too
    state_dir: str = "/var/lib/pktagent"
    user: str = ""  # started as root: become this user once the captures are open (keeping CAP_NET_RAW only)

    def __post_init__(self) -> None:
        for section in dataclasses.fields(self):
            value = getattr(self, section.name)
            if dataclasses.is_dataclass(value):
                _check_bounds(value, section.name)
        for i, net in enumerate(self.local_networks):
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ConfigError(f"config key local_networks[{i}]: {net!r} is not a network such as 192.168.0.0/16 or fd00::/8") from None
        listen_address(self.web.listen)
        telemetry_path(self.web.telemetry_path)
        names = set()
        for i, dev in enumerate(self.devices.inventory):
            where = f"devices.inventory[{i}]"
            if not _LABEL_SAFE.match(dev.name) or dev.name == "other":
                raise ConfigError(f"config key {where}.name: {dev.name!r} must be 1-64 letters, digits or _.:@+- and not 'other'")
            if dev.name in names:
                raise ConfigError(f"config key {where}.name: device {dev.name!r} is listed twice")
            names.add(dev.name)
            for j, mac in enumerate(dev.macs):
                if not _MAC.match(mac):
                    raise ConfigError(f"config key {where}.macs[{j}]: {mac!r} is not a MAC address such as 02:00:00:aa:bb:cc")
            for j, addr in enumerate(dev.addresses):
                try:
                    ipaddress.ip_address(addr)
                except ValueError:
                    raise ConfigError(f"config key {where}.addresses[{j}]: {addr!r} is not an IP address") from None
        for key in ("interfaces", "pcap"):
            items = getattr(self.capture, key)
            for i, item in enumerate(items):
                if item in items[:i]:  # two captures of one name would be two identical series
                    raise ConfigError(f"config key capture.{key}[{i}]: {item!r} is listed twice; list each once")
        if self.capture.pcap and self.capture.interfaces:
            raise ConfigError("config keys capture.interfaces and capture.pcap: choose one source, live interfaces or capture files")
        if self.otlp.protocol not in ("", "http/protobuf", "grpc"):
            raise ConfigError(f"config key otlp.protocol: {self.otlp.protocol!r} is not http/protobuf or grpc")
        for i, item in enumerate(self.otlp.headers):
            if "=" not in item or not item.split("=", 1)[0].strip():
                # The value may be a secret: the message does not repeat it.
                raise ConfigError(f"config key otlp.headers[{i}]: must be name=value, such as authorization=Bearer <token>")
        if 0 < self.capture.buffer_bytes < 65536:
            raise ConfigError(f"config key capture.buffer_bytes: must be 0 (sized from the host) or at least 65536, got {self.capture.buffer_bytes}")
        if self.capture.loop and not self.capture.pcap:
            raise ConfigError("config key capture.loop: only applies to capture.pcap files")

    def replace(self, section: str | None = None, **changes: Any) -> Config:
        """A copy with fields of the top level, or of one section, changed (and checked again)."""
        if section is None:
            return dataclasses.replace(self, **changes)
        return dataclasses.replace(self, **{section: dataclasses.replace(getattr(self, section), **changes)})


def differences(old: Config, new: Config) -> list[str]:
    """The dotted keys whose values differ between two configs (``flows.idle_timeout_seconds``, ...)."""

    def flat(obj: Any, prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            key = f"{prefix}{f.name}"
            if dataclasses.is_dataclass(value) and not isinstance(value, type) and f.name != "inventory":
                out.update(flat(value, key + "."))
            else:
                out[key] = value
        return out

    a, b = flat(old), flat(new)
    return sorted(k for k in a if a[k] != b[k])


def _check_bounds(section: Any, prefix: str) -> None:
    """Every number within its field's range, however the config was built (file, flags or code)."""
    for f in dataclasses.fields(section):
        low, high = f.metadata.get("low"), f.metadata.get("high")
        value = getattr(section, f.name)
        if low is not None and high is not None and isinstance(value, (int, float)) and not low <= value <= high:
            raise ConfigError(f"config key {prefix}.{f.name}: {range_message(type(value), low, high, value)}")


def range_message(kind: type, low: float | None, high: float | None, value: object) -> str:
    """The one wording of a value out of its range, for config keys and flags alike."""
    noun = "an integer" if kind is int else "a number"
    bounds = f" between {_number(low)} and {_number(high)}" if low is not None and high is not None else ""
    return f"must be {noun}{bounds}, got {_describe(value)}"


def listen_address(value: str, key: str = "config key web.listen") -> tuple[str, int]:
    """Split HOST:PORT (``[::]:PORT`` for IPv6), or raise a ConfigError naming ``key``."""
    m = re.match(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\[\]]*)):(?P<port>\d{1,5})$", value)
    if not m or not 0 <= int(m["port"]) < 65536:  # 0: any free port
        raise ConfigError(f"{key}: {value!r} is not HOST:PORT (for example 0.0.0.0:{DEFAULT_PORT} or [::]:{DEFAULT_PORT})")
    return (m["v6"] or m["host"] or "0.0.0.0"), int(m["port"])


def telemetry_path(value: str, key: str = "config key web.telemetry_path") -> str:
    """A path of its own for the metrics: absolute, and not the landing page's or /health's."""
    if not value.startswith("/") or value in ("/", "/health") or any(c in value for c in "?#") or any(c.isspace() for c in value):
        raise ConfigError(f"{key}: {value!r} must be a path such as /metrics (starting with /, not / or /health, no ?, # or spaces)")
    return value


# -- building from YAML -------------------------------------------------------------------


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _describe(value: object) -> str:
    return repr(value) if not isinstance(value, (dict, list)) else type(value).__name__


def _convert(value: Any, kind: Any, path: str, meta: Mapping[str, Any]) -> Any:
    origin = typing.get_origin(kind)
    if origin is tuple:
        item_kind = typing.get_args(kind)[0]
        if isinstance(value, str):  # `interfaces: eth0,lo` is one name with a comma in it, not two
            items = ", ".join(v.strip() for v in value.split(",") if v.strip()) or "..."
            raise ConfigError(f"config key {path}: must be a list, such as [{items}], got {_describe(value)}")
        if not isinstance(value, list):
            raise ConfigError(f"config key {path}: must be a list, got {_describe(value)}")
        return tuple(_convert(v, item_kind, f"{path}[{i}]", {}) for i, v in enumerate(value))
    if dataclasses.is_dataclass(kind):
        return _build(kind, value, path)
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key {path}: must be true or false, got {_describe(value)}")
        return value
    if kind is int or kind is float:
        ok = (isinstance(value, int) and not isinstance(value, bool)) or (kind is float and isinstance(value, float))
        low, high = meta.get("low"), meta.get("high")
        if not ok or (low is not None and value < low) or (high is not None and value > high):
            raise ConfigError(f"config key {path}: {range_message(kind, low, high, value)}")
        return kind(value)
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key {path}: must be a string, got {_describe(value)}")
        return value
    raise ConfigError(f"config key {path}: unsupported type")  # pragma: no cover - a programming error


def _build(cls: Any, data: Any, prefix: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        where = f"config key {prefix}" if prefix else "the config"
        raise ConfigError(f"{where}: must be a mapping of keys to values, got {_describe(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            import difflib  # only for the hint (0.2 MiB resident, and heapq, for every agent otherwise)

            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(fields)}"
            raise ConfigError(f"config key {path}: unknown key{hint}")
        kind = hints[key]
        if isinstance(kind, types.UnionType):  # pragma: no cover - no optional fields today
            kind = typing.get_args(kind)[0]
        kwargs[key] = _convert(value, kind, path, fields[key].metadata)
    missing = [n for n, f in fields.items() if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and n not in kwargs]
    if missing:
        raise ConfigError(f"config key {prefix + '.' if prefix else ''}{missing[0]}: required")
    return cls(**kwargs)


def from_mapping(data: Any) -> Config:
    """Build and check a Config from parsed YAML."""
    config: Config = _build(Config, data, "")
    return config


def load(path: str | Path) -> Config:
    """Read and check a YAML config file."""
    import yaml

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read config file {p}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {p} is not UTF-8 text") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{p}: not valid YAML{where}: {problem}") from None
    try:
        return from_mapping(data)
    except ConfigError as e:
        raise ConfigError(f"{p}: {e}") from None
