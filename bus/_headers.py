"""Parsing a NATS header block fast: what nats-py's ``Client._parse_header_lines``
returns, for a fraction of its cost (the seam, ``_natspy``, installs it on every
connection), and where a block's status and first header sit."""

from __future__ import annotations

import re

__all__ = ["FIRST_LINE", "PLAIN_BLOCK_MIN", "SPACE", "STATUS_AT", "parse_header_lines"]

STATUS_AT = len(b"NATS/1.0")
"""Where a status (``NATS/1.0 503``) starts, after a space; otherwise the line ends."""
SPACE = ord(" ")
FIRST_LINE = len(b"NATS/1.0\r\n")
PLAIN_BLOCK_MIN = FIRST_LINE
"""Shorter blocks hold no header: nats-py's own path answers them."""

_WHITESPACE = re.compile(r"[\t\n\x0b\x0c\r\x1c-\x1f ]")
"""What ``str.isspace`` is true of in ASCII (a key is ASCII)."""
_ASCII_SPACE = " \t\n\r\x0b\x0c"
"""What ``bytes.strip`` strips."""
_MAX_KNOWN_KEYS = 1024
_clean_keys: set[str] = set()


def parse_header_lines(raw: bytes) -> dict[str, str]:
    """nats-py's ``Client._parse_header_lines``, at a fraction of its cost.

    Same result for every input: lines without a colon, names that are not
    ASCII or hold whitespace are skipped; values are stripped and decoded as
    UTF-8 with replacement. An all-ASCII block (the usual one) is decoded once
    and split as text.
    """
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return _parse_header_bytes(raw)
    out: dict[str, str] = {}
    for line in text.split("\r\n"):
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            continue
        key = name.strip(_ASCII_SPACE)
        if key not in _clean_keys:
            if _WHITESPACE.search(key):
                continue
            if len(_clean_keys) < _MAX_KNOWN_KEYS:
                _clean_keys.add(key)
        out[key] = value.strip(_ASCII_SPACE)
    return out


def _parse_header_bytes(raw: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in raw.split(b"\r\n"):
        if not line:
            continue
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        try:
            key = name.strip().decode("ascii")
        except UnicodeDecodeError:
            continue
        if _WHITESPACE.search(key):
            continue
        out[key] = value.strip().decode("utf-8", "replace")
    return out
