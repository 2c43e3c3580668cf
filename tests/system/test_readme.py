"""The README as a new user meets it: its commands exist and parse, its pipeline example
is the shipped file and prints what it shows, and its ``module:Class`` agent runs.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from system_support import ROOT, STARTUP_TIMEOUT, Daemon, Proc, daemon_toml, run_cli

from actors import READY_LINE
from orchestrator.cli import build_parser

README = (ROOT / "README.md").read_text()
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def _blocks(*languages: str) -> Iterator[str]:
    for match in _FENCE.finditer(README):
        if match.group(1) in languages:
            yield match.group(2)


def _section(title: str) -> str:
    return README.split(title, 1)[1].split("\n#", 1)[0]


def _callboard_commands() -> list[list[str]]:
    """Every ``callboard …`` command of the README's shell blocks, as argv after the name."""
    commands: list[list[str]] = []
    for block in _blocks("sh", "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.removeprefix("$ ")
            lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            lexer.commenters = "#"
            segment: list[str] = []
            for token in [*lexer, ";"]:
                if token in {"|", "||", "&", "&&", ";", ">", "<", "$(", ")"}:
                    if segment[:1] == ["callboard"]:
                        commands.append(segment[1:])
                    segment = []
                elif not segment and token.startswith(("$(", ">")):
                    continue
                else:
                    segment.append(token)
    return commands


COMMANDS = _callboard_commands()


def test_the_readme_shows_the_commands_a_user_starts_with() -> None:
    names = {argv[0] for argv in COMMANDS if argv}
    assert {"server", "run", "submit", "monitor", "ask", "agents", "pipeline", "health"} <= names


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(a)[:60] for a in COMMANDS])
def test_every_callboard_line_of_the_readme_parses(argv: list[str]) -> None:
    """Subcommands and flags as the README writes them exist (argparse exits 2 otherwise)."""
    try:
        build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"`callboard {shlex.join(argv)}` does not parse (exit {exc.code})")


def test_the_pipeline_snippet_is_the_shipped_example() -> None:
    snippet = next(b for b in _blocks("toml") if "[[steps]]" in b)
    shipped = (ROOT / "deploy" / "pipelines" / "example.toml").read_text()
    assert tomllib.loads(snippet) == tomllib.loads(shipped)


_TIMING = re.compile(r" in \d+(?:\.\d+)?ms: ")
_REPLICA = re.compile(r" by (\w+)-\d+ ")


def _normalised(line: str) -> str:
    """A pipeline line without what varies run to run: its time and which replica ran it."""
    return _REPLICA.sub(r" by \1-N ", _TIMING.sub(" in …ms: ", line))


def test_the_pipeline_example_prints_what_the_readme_shows(
    start_daemon: Callable[..., Daemon],
    prefix: str,
    cli_env: dict[str, str],
    callboard_cmd: list[str],
) -> None:
    block = _section("### Pipelines: `callboard pipeline`")
    shown = block.split("$ callboard pipeline deploy/pipelines/example.toml\n", 1)[1]
    expected = [line for line in shown.split("\n$ ", 1)[0].splitlines()]
    agents = tomllib.loads((ROOT / "deploy" / "agents.toml").read_text())["agents"]
    start_daemon(agents, prefix=prefix)

    ran = run_cli(
        callboard_cmd, cli_env, ["pipeline", "deploy/pipelines/example.toml", "--prefix", prefix]
    )
    assert ran.returncode == 0, ran.stderr
    assert [_normalised(line) for line in ran.stdout.splitlines()] == [
        _normalised(line) for line in expected
    ]


def test_the_readme_module_class_agent_runs_from_pythonpath_not_from_the_cwd(
    tmp_path: Path, prefix: str, cli_env: dict[str, str], procs: Callable[..., Proc]
) -> None:
    """The console script imports ``module:Class`` from sys.path: PYTHONPATH, not the cwd."""
    source = next(b for b in _blocks("python") if "class Translator(Agent)" in b)
    (tmp_path / "translator.py").write_text(source)
    config = tmp_path / "agents.toml"
    agent = {"type": "translator:Translator", "id": "translator-1", "options": {"language": "de"}}
    config.write_text(daemon_toml(prefix, [agent]))
    script = str(Path(sys.executable).parent / "callboard")  # what `pip install` puts on PATH

    from_cwd = subprocess.run(
        [script, "run", str(config)],
        env=cli_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=STARTUP_TIMEOUT,
    )
    assert from_cwd.returncode == 2, from_cwd.stderr
    assert "cannot import 'translator'" in from_cwd.stderr

    env = {**cli_env, "PYTHONPATH": str(tmp_path)}
    daemon = procs([script, "run", str(config)], env=env, name="translator")
    daemon.stderr.wait_for(READY_LINE, STARTUP_TIMEOUT)
    ran = run_cli([script], cli_env, ["submit", "translate", '"hallo"', "--prefix", prefix])
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == '{"language":"de","text":"hallo"}'
