"""Log lines on stderr: plain (``pktagent: LEVEL: message``), logfmt or JSON, as ``--log.format`` says.

logfmt and JSON carry the same keys as exporter-toolkit's (``time``, ``level``, ``msg``) plus the
logger, so a log shipper that parses node_exporter's lines parses these.

>>> import logging
>>> LogfmtFormatter().format(logging.LogRecord("pktagent", logging.INFO, "", 0, 'said "hi"', None, None)).split(" ", 1)[1]
'level=info logger=pktagent msg="said \\\\"hi\\\\""'
"""

from __future__ import annotations

import datetime
import json
import logging
import sys

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("logfmt", "json")


def _time(record: logging.LogRecord) -> str:
    return datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _fields(record: logging.LogRecord) -> dict[str, str]:
    msg = record.getMessage()
    if record.exc_info:
        msg += "\n" + logging.Formatter().formatException(record.exc_info)
    return {"time": _time(record), "level": record.levelname.lower(), "logger": record.name, "msg": msg}


def _logfmt_value(value: str) -> str:
    if value and not any(c in value for c in ' ="\\\n\t'):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t") + '"'


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in _fields(record).items())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record), ensure_ascii=False)


def setup(level: str, fmt: str | None) -> None:
    """Send the package's log records to stderr at ``level`` in format ``fmt`` (None: plain lines)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "logfmt":
        handler.setFormatter(LogfmtFormatter())
    elif fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("pktagent: %(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper()))
