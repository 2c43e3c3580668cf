"""Public face of the hot path's wire: frames (task, reply, status event), the
writer that appends them to a connection's buffer, the faster header parser,
and a subscription's queue taken over by its reader."""

from __future__ import annotations

from ._natspy import Taken, take_over_queue
from ._wire import *  # noqa: F403
from ._wire import __all__ as _framing

__all__ = [*_framing, "Taken", "take_over_queue"]
