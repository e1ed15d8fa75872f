"""The README's tables that code can check: the metric catalogue, its OTLP names, and the config keys."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from agent.config import Config
from agent.export.catalogue import CATALOGUE

README = Path(__file__).resolve().parent.parent / "README.md"


def otlp_table() -> str:
    rows = ["| Prometheus | OpenTelemetry | unit | kind | attributes |", "|---|---|---|---|---|"]
    for f in CATALOGUE:
        attrs = ", ".join(f"`{a}`" for a in f.attributes) or "-"
        rows.append(f"| `{f.name}` | `{f.otel}` | {f.unit or '-'} | {f.otel_kind} | {attrs} |")
    return "\n".join(rows)


def metrics_table() -> str:
    rows = ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    for f in CATALOGUE:
        rows.append(f"| `{f.name}` | {f.kind} | {', '.join(f.labels) or '-'} | {f.help} |")
    return "\n".join(rows) + "\n"


TABLES = {"otlp-table": otlp_table, "metrics-table": metrics_table}


@pytest.mark.parametrize("marker", sorted(TABLES))
def test_the_readme_tables_are_the_catalogue_the_code_uses(marker: str) -> None:
    found = re.search(rf"<!-- {marker} -->\n(.*?)\n?<!-- end {marker} -->", README.read_text(), re.S)
    assert found is not None
    assert found.group(1).rstrip("\n") == TABLES[marker]().rstrip("\n"), "regenerate: python tests/test_readme.py"


def test_every_config_key_is_in_the_readme() -> None:
    text = README.read_text()
    for section in dataclasses.fields(Config):
        value = getattr(Config(), section.name)
        keys = [f"{section.name}.{f.name}" for f in dataclasses.fields(value)] if dataclasses.is_dataclass(value) else [section.name]
        for key in keys:
            assert f"`{key}`" in text or f"`{key}`," in text, key


def write() -> None:
    text = README.read_text()
    for marker, table in TABLES.items():
        text = re.sub(rf"(<!-- {marker} -->\n).*?(\n?<!-- end {marker} -->)", lambda m, t=table: m.group(1) + t().rstrip("\n") + m.group(2), text, flags=re.S)
    README.write_text(text)


if __name__ == "__main__":
    write()
