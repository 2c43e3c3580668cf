"""The Go side of the test suite: the real ``nats`` CLI, the nats.go programs of
``tests/interop/go`` and the official ``$SRV`` JSON schemas (from the jsm.go module).

Each is found where ``go install`` / ``go mod download`` put it, and made there when it is
missing (as ``.ci/run`` does), so a test needs only Go itself. Without Go a test skips,
saying what to install; with ``CI=true`` it fails instead, since CI must run them.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GO_PROGRAMS = ROOT / "tests" / "interop" / "go"

NATSCLI = "github.com/nats-io/natscli/nats@v0.5.0"
"""The natscli release the README tells users to install, and the tests run."""
NATSCLI_VERSION = "v0.5.0"
JSM_MODULE = "github.com/nats-io/jsm.go@v0.5.0"
"""The jsm.go release (natscli v0.5.0's) whose ``schemas/micro/v1`` define ADR-32's replies."""

_BUILD_TIMEOUT = 900.0
"""Seconds ``go install`` / ``go build`` may take on a cold module cache."""


def go_binary() -> str:
    """The ``go`` command, or a skip (a failure on CI) that says how to get it."""
    found = shutil.which("go") or shutil.which("go", path="/usr/local/go/bin")
    if found is None:
        why = "Go is not installed: the nats CLI and the nats.go tests need Go 1.26+ (go.dev/dl)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{why} (CI=true: these tests must run on CI)")
        pytest.skip(why)
    return found


def _go(*args: str, cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(
            [go_binary(), *args],
            capture_output=True,
            text=True,
            cwd=cwd,
            timeout=_BUILD_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"`go {' '.join(args)}` did not finish within {_BUILD_TIMEOUT:g}s")
    if done.returncode != 0:
        pytest.fail(f"`go {' '.join(args)}` failed:\n{done.stderr}")
    return done.stdout


@functools.cache
def gopath_bin() -> Path:
    """Where ``go install`` puts commands: ``$(go env GOPATH)/bin``."""
    return Path(_go("env", "GOPATH").strip()) / "bin"


def _version_of(path: str) -> str:
    done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
    return (done.stdout or done.stderr).strip()


@functools.cache
def nats_cli() -> str:
    """The natscli v0.5.0 binary: from ``$(go env GOPATH)/bin`` or PATH, else installed."""
    candidates = [str(gopath_bin() / "nats"), shutil.which("nats")]
    for path in candidates:
        if path and Path(path).is_file() and _version_of(path) == NATSCLI_VERSION:
            return path
    _go("install", NATSCLI)
    return str(gopath_bin() / "nats")


def build_go_programs(out: Path) -> Path:
    """Build the ``tests/interop/go`` programs (``agent``, ``client``) into ``out``."""
    _go("build", "-o", str(out) + os.sep, "./...", cwd=GO_PROGRAMS)
    return out


@functools.cache
def micro_schemas() -> dict[str, dict[str, object]]:
    """The official ADR-32 schemas by reply type (``io.nats.micro.v1.ping_response``, ...)."""
    module = json.loads(_go("mod", "download", "-json", JSM_MODULE))
    schemas: dict[str, dict[str, object]] = {}
    for path in sorted((Path(module["Dir"]) / "schemas" / "micro" / "v1").glob("*.json")):
        schema = json.loads(path.read_text())
        schemas[str(schema["title"])] = schema
    return schemas


def nats_env(home: Path) -> dict[str, str]:
    """An environment for the nats CLI that reads no user config: no NATS_* variables,
    HOME and XDG_CONFIG_HOME in a directory of the test's own (so no saved context)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NATS_")}
    env["HOME"] = str(home)
    env["XDG_CONFIG_HOME"] = str(home / ".config")
    return env
