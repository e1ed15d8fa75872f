"""``python -m agent``: the same as the ``pktagent`` command."""

from agent.cli import main

raise SystemExit(main())
