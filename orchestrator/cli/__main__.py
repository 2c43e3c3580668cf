"""``python -m orchestrator.cli``: the ``callboard`` console script."""

from __future__ import annotations

import sys

from orchestrator.cli._main import main

if __name__ == "__main__":  # not in a worker process that imports it
    sys.exit(main())
