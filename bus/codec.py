"""Public face of the wire codec: header names and encode/decode functions."""

from __future__ import annotations

from ._codec import *  # noqa: F403
from ._codec import __all__ as __all__
