"""Public face of the NATS micro (``$SRV``) protocol types."""

from __future__ import annotations

from ._micro import *  # noqa: F403
from ._micro import __all__ as __all__
