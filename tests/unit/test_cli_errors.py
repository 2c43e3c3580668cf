"""The CLI reports the one error that ended a command's task group as itself."""

from __future__ import annotations

import argparse

import anyio
import pytest

from bus import ConfigError
from orchestrator.cli._main import _run_command


async def _fails_in_a_task_group(args: argparse.Namespace) -> int:
    async def fail() -> None:
        raise ConfigError("no status history")

    async with anyio.create_task_group() as tg:
        tg.start_soon(fail)
    return 0


async def _fails_twice(args: argparse.Namespace) -> int:
    started: list[int] = []
    both = anyio.Event()

    async def fail(n: int) -> None:
        started.append(n)
        if len(started) == 2:
            both.set()
        with anyio.CancelScope(shield=True):  # both raise, whoever raises first
            await both.wait()
        raise ConfigError(f"failure {n}")

    async with anyio.create_task_group() as tg:
        tg.start_soon(fail, 1)
        tg.start_soon(fail, 2)
    return 0


def test_the_one_error_of_a_task_group_comes_out_as_itself() -> None:
    with pytest.raises(ConfigError, match="no status history"):
        _run_command(argparse.Namespace(func=_fails_in_a_task_group))


def test_several_errors_stay_a_group() -> None:
    with pytest.raises(BaseExceptionGroup):
        _run_command(argparse.Namespace(func=_fails_twice))
