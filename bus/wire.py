"""Public face of the hot path's wire writer: header blocks, framed messages
written straight into a connection's buffer, the faster header parser."""

from __future__ import annotations

from ._wire import *  # noqa: F403
from ._wire import __all__ as __all__
