"""``python -m orchestrator.cli``: the ``callboard`` console script."""

from __future__ import annotations

import sys

from ._main import main

sys.exit(main())
