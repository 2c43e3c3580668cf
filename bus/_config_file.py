"""Reading a TOML config file into a msgspec type, with errors that name the file.

The daemon (``callboard run``) and the gateway (``callboard gateway``) read their
files the same way: unreadable, invalid TOML and invalid fields are each one
``ConfigError`` line that says which file and what is wrong.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import msgspec

from ._errors import ConfigError

__all__ = ["load_toml_file"]

T = TypeVar("T")


def load_toml_file(path: str | Path, type_: type[T], *, what: str = "config") -> T:
    """Decode the TOML file at ``path`` as ``type_``.

    Args:
        path: the file.
        type_: a msgspec-decodable type (a Struct, as a rule).
        what: how errors name the file ("config", "gateway config", ...).

    Raises:
        ConfigError: the file cannot be read, is not TOML, or does not fit ``type_``.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} file {path}: {exc.strerror or exc}") from exc
    try:
        return msgspec.toml.decode(raw, type=type_)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid {what} {path}: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{what} {path} is not valid TOML: {exc}") from exc
