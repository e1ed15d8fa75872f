"""The house rules of ARCHITECTURE.md, checked: who may import whom, no cycles, small modules and functions."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "agent"
MAX_MODULE_LINES, MAX_FUNCTION_LINES, MAX_TOP_MODULES = 450, 60, 8

# What each part may import besides itself. "errors" and "config" are plain entry modules at the
# bottom; "base" holds value types. Stages and exporters never reach into runtime or each other.
MAY_IMPORT: dict[str, set[str]] = {
    "errors": set(),
    "logs": set(),
    "version": {"errors", "__init__"},
    "base": {"errors"},
    "config": {"errors", "base"},
    "capture": {"errors", "base", "config"},
    "stages": {"errors", "base", "config"},
    "naming": {"errors", "base", "config"},
    "export": {"errors", "base", "config"},
    "runtime": {"errors", "base", "config", "capture", "stages", "naming", "export", "version", "__init__"},
    "cli": {"errors", "base", "config", "capture", "stages", "naming", "export", "runtime", "__init__", "logs", "version"},
    "__main__": {"cli"},
    "__init__": set(),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path) -> Iterator[str]:
    """Every module of the package that ``path`` imports, at the top or inside a function."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "agent" and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                yield sub if sub in MODULES else node.module
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.split(".")[0] == "agent")


def part(module: str) -> str:
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


GRAPH = {m: set(imports(p)) - {m} for m, p in MODULES.items()}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_each_module_imports_only_what_its_part_may(module: str) -> None:
    mine = part(module)
    wrong = {dep for dep in GRAPH[module] if part(dep) != mine and part(dep) not in MAY_IMPORT[mine]}
    assert not wrong, f"{module} ({mine}) imports {sorted(wrong)}: see ARCHITECTURE.md for what {mine} may import"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if part(m) == "stages"))
def test_stages_do_not_import_each_other(module: str) -> None:
    own = ".".join(module.split(".")[:3])  # agent.stages.decode.ip belongs to agent.stages.decode
    others = {d for d in GRAPH[module] if part(d) == "stages" and not d.startswith(own)}
    assert not others, f"{module} imports the stages {sorted(others)}: stages are wired by agent/runtime/pipeline.py"


def test_no_import_cycles() -> None:
    state: dict[str, int] = {}
    trail: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        trail.append(m)
        for dep in sorted(GRAPH[m] & MODULES.keys()):
            if state.get(dep) == 1:
                pytest.fail("import cycle: " + " -> ".join([*trail[trail.index(dep) :], dep]))
            if dep not in state:
                visit(dep)
        trail.pop()
        state[m] = 2

    for m in sorted(MODULES):
        if m not in state:
            visit(m)


def test_the_top_level_holds_only_entry_modules() -> None:
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_MODULES, top


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_and_functions_stay_small(module: str) -> None:
    source = MODULES[module].read_text()
    assert len(source.splitlines()) <= MAX_MODULE_LINES, f"{module} has {len(source.splitlines())} lines: split it"
    long = [
        (node.name, node.end_lineno - node.lineno + 1)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"{module}: functions over {MAX_FUNCTION_LINES} lines: {long}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_says_what_it_is(module: str) -> None:
    doc = ast.get_docstring(ast.parse(MODULES[module].read_text()))
    assert doc, f"{module} has no docstring"


# What a live agent with the default config must not load: each is megabytes of a Pi's memory
# for something it does not use (README "Performance"). ssl and hashlib come with a web config
# that asks for TLS or users, multiprocessing with --workers, opentelemetry with OTLP.
HEAVY = (
    "ssl",
    "_ssl",
    "_hashlib",
    "hashlib",
    "http.server",
    "http.client",
    "email",
    "urllib.request",
    "prometheus_client",
    "multiprocessing",
    "opentelemetry",
    "subprocess",
    "tempfile",
    "difflib",  # the config's "did you mean" hint, loaded only for a wrong key
    "shutil",  # with bz2 and lzma, 0.6 MiB: argparse's default formatter asks it for the terminal's width
    "bz2",
    "lzma",
    "gzip",  # the gzip'd exposition is zlib's own
    "encodings.idna",  # with stringprep and unicodedata, 0.3 MiB: getaddrinfo of a str host
)
LIVE_PATH = """
import sys
from agent.cli import build_parser
from agent.config import Config
from agent.export.metrics import Exposition
from agent.export.process import process_families
from agent.export.server import MetricsServer
from agent.naming.domains import registrable
from agent.naming.store import Store
from agent.runtime.agent import Agent
from agent.runtime.pipeline import Pipeline
from agent.capture.live import LiveSource

build_parser()
pipeline = Pipeline(Config(), ["eth0"])
registrable("www.example.co.uk")  # the suffix list, read at the first DNS answer
server = MetricsServer("127.0.0.1", 0, Exposition(lambda: None, extra=process_families).render, lambda: (200, {}))
server.close()
print(" ".join(sorted(m for m in sys.modules if m in HEAVY)))
"""


def test_a_live_agent_loads_no_heavy_module() -> None:
    """Everything a live agent runs with the default config, imported and built: none of HEAVY comes with it."""
    import subprocess
    import sys

    code = f"HEAVY = {HEAVY!r}\n{LIVE_PATH}"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=Path(__file__).parent.parent)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == []
