"""The README's tables that code can check: the OTLP name map and the config defaults."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from agent.config import Config
from agent.export.otlp import METRICS

README = Path(__file__).resolve().parent.parent / "README.md"


def otlp_table() -> str:
    rows = ["| Prometheus | OpenTelemetry | unit | kind | attributes |", "|---|---|---|---|---|"]
    for m in METRICS:
        attrs = ", ".join(f"`{a}`" for a in m.attributes) or "-"
        rows.append(f"| `{m.prometheus}` | `{m.otel}` | {m.unit or '-'} | {m.kind} | {attrs} |")
    return "\n".join(rows)


def test_the_otlp_table_is_the_mapping_the_code_uses() -> None:
    text = README.read_text()
    found = re.search(r"<!-- otlp-table -->\n(.*?)\n<!-- end otlp-table -->", text, re.S)
    assert found is not None
    assert found.group(1) == otlp_table(), "regenerate: python -c 'import tests.test_readme as t; t.write()'"


def test_every_config_key_is_in_the_readme() -> None:
    text = README.read_text()
    for section in dataclasses.fields(Config):
        value = getattr(Config(), section.name)
        keys = [f"{section.name}.{f.name}" for f in dataclasses.fields(value)] if dataclasses.is_dataclass(value) else [section.name]
        for key in keys:
            assert f"`{key}`" in text or f"`{key}`," in text, key


def write() -> None:
    text = README.read_text()
    README.write_text(re.sub(r"(<!-- otlp-table -->\n).*?(\n<!-- end otlp-table -->)", lambda m: m.group(1) + otlp_table() + m.group(2), text, flags=re.S))


if __name__ == "__main__":
    write()
