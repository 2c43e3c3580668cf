"""Long texts are summarised in worker processes; when workers cannot run, in threads.

A main script that is not guarded by ``if __name__ == "__main__":`` is loaded
again by each worker (as with ``multiprocessing``): here it makes the worker
exit, a real process fault. The summaries must still come back, and after a
few failed workers the agent says so once and stops starting them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from actors.builtins._agents import INLINE_TEXT, WORKER_FAILURES_TOLERATED

ROOT = Path(__file__).resolve().parents[2]

_SCRIPT = """
import logging, sys
if __name__ != "__main__":  # loaded again by a worker process: it dies
    raise SystemExit(3)
import anyio
from actors.builtins._agents import _summarize_elsewhere
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
async def main():
    text = "A sentence about workers. Another one about threads. " * {repeat}
    for _ in range({calls}):
        print("summary:", await _summarize_elsewhere(text, 1), flush=True)
anyio.run(main)
"""


def test_summaries_come_back_when_worker_processes_die(tmp_path: Path) -> None:
    calls = WORKER_FAILURES_TOLERATED + 2
    script = tmp_path / "unguarded.py"
    script.write_text(_SCRIPT.format(repeat=INLINE_TEXT // 50 + 1, calls=calls))
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["summary: Another one about threads."] * calls
    assert done.stderr.count("worker processes in a row died or could not start") == 1, done.stderr
