"""A full-screen text view redrawn in place with ANSI escapes (no curses needed).

It uses the terminal's alternate screen, as ``top`` and ``less`` do, so the
shell's scrollback is untouched, and it restores the terminal on the way out
whatever the way out is (Ctrl-C and cancellation included).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from types import TracebackType
from typing import TextIO

__all__ = ["LiveScreen"]

_ENTER = "\x1b[?1049h\x1b[?25l"  # alternate screen, cursor hidden
_LEAVE = "\x1b[?25h\x1b[?1049l"  # cursor shown, normal screen back
_HOME = "\x1b[H"
_CLEAR_LINE = "\x1b[K"
_CLEAR_BELOW = "\x1b[J"


class LiveScreen:
    """Redraws a list of lines over the previous ones; a context manager.

    Args:
        stream: the terminal (``sys.stdout``).
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._active = False

    @staticmethod
    def size() -> tuple[int, int]:
        """(columns, lines) of the terminal now, so a resize shows at the next draw.

        One column is kept free: a line that fills the last column leaves some
        terminals waiting to wrap, and the next escape would erase its last character.
        """
        size = shutil.get_terminal_size()
        return max(size.columns - 1, 20), max(size.lines, 3)

    def __enter__(self) -> LiveScreen:
        self._stream.write(_ENTER)
        self._stream.flush()
        self._active = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Give the terminal back as it was; idempotent."""
        if self._active:
            self._active = False
            self._stream.write(_LEAVE)
            self._stream.flush()

    def draw(self, lines: Sequence[str]) -> None:
        """Replace what is shown with ``lines`` (one write, so no flicker)."""
        body = (_CLEAR_LINE + "\n").join(lines)
        self._stream.write(_HOME + body + _CLEAR_LINE + _CLEAR_BELOW)
        self._stream.flush()
