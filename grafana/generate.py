"""Write the dashboards and rules of grafana/ from grafana/pktagent_mixin/ (``--check``: only compare).

python grafana/generate.py           # regenerate after changing the mixin
python grafana/generate.py --check   # exit 1, naming the files, when the committed ones differ
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from pktagent_mixin import render  # noqa: E402


def stale(root: Path = HERE) -> list[str]:
    """Generated files whose committed text differs from the mixin's output."""
    return [path for path, text in render().items() if not (root / path).is_file() or (root / path).read_text(encoding="utf-8") != text]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="compare with the committed files instead of writing them")
    args = p.parse_args(argv)
    if args.check:
        out = stale()
        for path in out:
            print(f"grafana/{path} is out of date: run python grafana/generate.py", file=sys.stderr)
        return 1 if out else 0
    for path, text in render().items():
        target = HERE / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        print(f"wrote grafana/{path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
