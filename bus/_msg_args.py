"""A ``MSG``/``HMSG`` line's arguments split as the server splits them, for the
seam's parser (``_natspy``) when a line is not in the server's usual form."""

from __future__ import annotations

import re

__all__ = ["msg_args"]

_SERVER_SEPARATORS = re.compile(rb"[ \t]+")
"""What separates the arguments of a line the server sends (its ``splitArg``
splits on space, tab, CR and LF only)."""


def msg_args(line: bytes) -> tuple[list[bytes], int, int] | None:
    """A ``MSG``/``HMSG`` line's arguments, their count and its header size, split
    as the server splits them (on runs of spaces and tabs); None for any other line,
    or a malformed one (nats-py's parser reads or refuses it).

    A publisher picks the subject and reply, and the server lets any byte but
    space, tab, CR and LF into them; ``bytes.split`` (and nats-py's regex) also
    split on vertical tab and form feed: nats-py raises ``ProtocolError`` (the
    connection reconnects, losing whatever else that read held), or strips one at
    a token's end and answers another subject than the one asked."""
    args = _SERVER_SEPARATORS.split(line.strip(b" \t"))
    n = len(args)
    if n < 4 or not args[2].isdigit() or not args[-1].isdigit():
        return None
    if args[0] == b"HMSG" and (n == 5 or n == 6) and args[-2].isdigit():
        return args, n, int(args[-2])
    if args[0] == b"MSG" and (n == 4 or n == 5):
        return args, n, 0
    return None
