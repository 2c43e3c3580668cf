"""CPU time and resident memory of a process, by PID.

psutil when it is installed (the ``bench`` extra), else Linux's ``/proc``.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

__all__ = ["cpu_seconds", "rss_bytes"]

psutil: Any
try:
    psutil = importlib.import_module("psutil")
except ImportError:  # pragma: no cover - depends on the environment
    psutil = None

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used so far (all its threads)."""
    if psutil is not None:
        times = psutil.Process(pid).cpu_times()
        return float(times.user + times.system)
    # fields after the command name (which may hold spaces) start at "state"
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def rss_bytes(pid: int) -> int:
    """Resident set size of the process, in bytes."""
    if psutil is not None:
        return int(psutil.Process(pid).memory_info().rss)
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
