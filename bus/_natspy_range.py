"""The nats-py versions the seam (``_natspy``) is tested against, checked at
import: any other is refused with an error that says what to install, rather
than risking a hang on an internal that moved; and what differs within the range."""

from __future__ import annotations

import re
from importlib import metadata

import nats.errors

__all__ = ["NATS_PY_RANGE", "NATS_PY_VERSION", "BadHeaderError", "check_nats_py_version"]

NATS_PY_RANGE = ((2, 15), (2, 17))
"""The nats-py versions the seam is tested against: at least the first, below the second."""


def _range_text() -> str:
    (lo_major, lo_minor), (hi_major, hi_minor) = NATS_PY_RANGE
    return f">={lo_major}.{lo_minor},<{hi_major}.{hi_minor}"


def _release(version: str) -> tuple[int, ...]:
    numbers = []
    for part in version.split("."):
        digits = re.match(r"\d+", part)
        if digits is None:
            break
        numbers.append(int(digits.group()))
        if digits.end() < len(part):  # 2.17.0rc1: a pre-release of 2.17.0
            break
    return tuple(numbers)


def check_nats_py_version(version: str | None = None) -> str:
    """Refuse a nats-py outside ``NATS_PY_RANGE`` (the installed one by default).

    Raises:
        ImportError: the version is outside the range; the message names the
            range and the pip command that installs a good version.
    """
    if version is None:
        try:
            version = metadata.version("nats-py")
        except metadata.PackageNotFoundError:
            version = "unknown"
    low, high = NATS_PY_RANGE
    if not low <= _release(version)[:2] < high:
        wanted = _range_text()
        raise ImportError(
            f"callboard needs nats-py {wanted} (the versions it is tested with), but "
            f"nats-py {version} is installed: run  pip install 'nats-py[nkeys]{wanted}'"
        )
    return version


NATS_PY_VERSION = check_nats_py_version()


BadHeaderError: type[nats.errors.Error] = getattr(nats.errors, "BadHeaderError", None) or type(
    "BadHeaderError", (nats.errors.Error,), {"__doc__": "A header key that is not a token."}
)
"""nats-py's error for a header key that is not a token (2.16 added it; 2.15 has none)."""
