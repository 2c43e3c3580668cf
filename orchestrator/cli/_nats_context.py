"""The ``nats`` CLI's contexts: named connection settings that callboard honours too.

A user of the ``nats`` CLI keeps a server, a login and TLS files in a context
(``nats context save NAME --server ... --creds ...``) and selects one
(``nats context select NAME``); callboard reads the same files, the way
natscli's ``natscontext`` package (nats-io/jsm.go) lays them out:

- ``$XDG_CONFIG_HOME/nats/context/NAME.json`` (``~/.config/nats`` without
  ``XDG_CONFIG_HOME``), one JSON object per context;
- ``$XDG_CONFIG_HOME/nats/context.txt``, the name of the selected one.

Which context: ``--context NAME`` (a name, or the path of a ``.json`` file),
else ``NATS_CONTEXT``, else the selected one, else none; ``--no-context``
ignores them all. As in natscli, the command line beats the environment
(``NATS_URL``, ``NATS_CREDS``, ...), which beats the context, which beats the
defaults. A context that names a setting callboard cannot honour is refused,
never half-used.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bus import ConfigError

__all__ = ["CONTEXT_ENV", "context_dir", "load_context_fields"]

CONTEXT_ENV = "NATS_CONTEXT"

_FIELDS = {
    "url": "url",
    "user": "user",
    "password": "password",
    "token": "token",
    "creds": "creds",
    "nkey": "nkey",
    "cert": "tls_cert",
    "key": "tls_key",
    "ca": "tls_ca",
    "inbox_prefix": "inbox_prefix",
    "tls_first": "tls_first",
}
"""A context's JSON field → its ``ConnectOptions`` field."""

_PATH_FIELDS = ("creds", "nkey", "cert", "key", "ca")
"""Fields that natscontext expands (``$VAR`` and a leading ``~``)."""

_UNSUPPORTED = (
    "socks_proxy",
    "user_jwt",
    "user_seed",
    "nsc",
    "windows_cert_store",
    "windows_cert_match",
    "windows_ca_certs_match",
)
"""Settings that change how to connect, which callboard cannot do: refused."""

_VARIABLE = re.compile(r"\$\{([^}]*)\}|\$([A-Za-z0-9_]+)")

_IGNORED = ("name", "description", "color_scheme", "windows_cert_match_by")
"""Settings with no bearing on a connection."""

_JETSTREAM = ("jetstream_domain", "jetstream_api_prefix", "jetstream_event_prefix")
"""JetStream elsewhere than the account's default API: callboard's durable tasks cannot."""


def context_dir(environ: Mapping[str, str]) -> Path:
    """``$XDG_CONFIG_HOME/nats``, or ``~/.config/nats``: where natscli keeps contexts."""
    root = environ.get("XDG_CONFIG_HOME") or os.path.join(
        environ.get("HOME") or os.path.expanduser("~"), ".config"
    )
    return Path(root) / "nats"


def load_context_fields(
    name: str | None,
    *,
    no_context: bool = False,
    use_selected: bool = True,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The ``ConnectOptions`` fields of the context in use (empty when there is none).

    Args:
        name: ``--context`` as given (a context name or a ``.json`` path), or None.
        no_context: ``--no-context``: use no context, not even the selected one.
        use_selected: fall back on the selected context (``callboard run`` does
            not: its config file is its context, unless one is named).
        environ: the environment (``NATS_CONTEXT``, ``XDG_CONFIG_HOME``, ``HOME``).

    Raises:
        ConfigError: the named or selected context does not exist, is not valid
            JSON, or asks for something callboard cannot do (a usage error).
    """
    env = os.environ if environ is None else environ
    if no_context:
        return {}
    root = context_dir(env)
    how = "--context"
    if not name:
        name, how = env.get(CONTEXT_ENV) or None, CONTEXT_ENV
    if not name and use_selected:
        name, how = _selected(root), f"the context selected in {root / 'context.txt'}"
    if not name:
        return {}
    path = Path(name)
    if not (name.endswith(".json") and path.is_file()):
        _check_name(name, how)
        path = root / "context" / f"{name}.json"
    try:
        settings = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"unknown NATS context {name!r} ({how}): no file {path}; create it with "
            f"'nats context save {name} --server URL', or list them with 'nats context ls'"
        ) from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read NATS context {name!r} from {path}: {exc}") from exc
    if not isinstance(settings, dict):
        raise ConfigError(f"NATS context {name!r} ({path}) is not a JSON object")
    return _connect_fields(name, settings, env)


def _selected(root: Path) -> str | None:
    try:
        return (root / "context.txt").read_text().strip() or None
    except OSError:
        return None


def _check_name(name: str, how: str) -> None:
    """natscontext's rule: no ``..``, no ``/`` or ``\\``."""
    if ".." in name or "/" in name or "\\" in name:
        raise ConfigError(
            f"invalid NATS context name {name!r} ({how}): it may not contain '..', '/' or "
            "'\\' (give the path of a .json file to use a context file)"
        )


def _connect_fields(name: str, settings: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    for key in _UNSUPPORTED + _JETSTREAM:
        if settings.get(key):
            raise ConfigError(
                f"NATS context {name!r} sets {key!r}, which callboard does not support: "
                "use a context without it, or --no-context with flags"
            )
    fields: dict[str, Any] = {}
    for key, value in settings.items():
        if key in _IGNORED or key in _UNSUPPORTED or key in _JETSTREAM or value in ("", None):
            continue
        if key not in _FIELDS:
            continue  # a newer natscli's setting that changes nothing here
        if key in _PATH_FIELDS:
            value = _local_path(name, key, str(value), env)
        fields[_FIELDS[key]] = value
    return fields


def _local_path(name: str, key: str, value: str, env: Mapping[str, str]) -> str:
    """A file the context names: ``$VAR`` and ``~`` expanded, ``file://`` accepted."""
    if value.startswith("file://"):
        value = value.removeprefix("file://")
    elif "://" in value or value.startswith("data:"):
        raise ConfigError(
            f"NATS context {name!r} gives {key!r} as {value.split(':', 1)[0]}:..., which "
            "callboard cannot read: give it as the path of a file"
        )
    expanded = _expand_vars(value, env)
    if expanded.startswith("~"):
        expanded = os.path.join(
            env.get("HOME") or os.path.expanduser("~"), expanded[1:].lstrip("/")
        )
    return expanded


def _expand_vars(value: str, env: Mapping[str, str]) -> str:
    """Go's ``os.ExpandEnv``: ``$VAR`` and ``${VAR}``, unset ones empty."""
    return _VARIABLE.sub(lambda m: env.get(m.group(1) or m.group(2), ""), value)
