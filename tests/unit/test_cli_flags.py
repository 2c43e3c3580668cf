"""Connection flags: callboard's names and the ``nats`` CLI's spellings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bus import ConfigError, ConnectOptions
from orchestrator.cli import EXIT_USAGE, build_parser, main
from orchestrator.cli._nats_context import load_context_fields
from orchestrator.cli._values import parse_duration


def test_the_nats_cli_spellings_of_the_tls_flags_are_accepted() -> None:
    args = build_parser().parse_args(
        ["submit", "--tlsca", "ca.pem", "--tlscert", "c.pem", "--tlskey", "k.pem", "math", "{}"]
    )
    assert (args.tls_ca, args.tls_cert, args.tls_key) == ("ca.pem", "c.pem", "k.pem")


def test_callboards_own_spellings_work_before_the_subcommand_too() -> None:
    args = build_parser().parse_args(
        ["--tls-ca", "ca.pem", "--creds", "a.creds", "--user", "u", "submit", "math", "{}"]
    )
    assert (args.tls_ca, args.creds, args.user) == ("ca.pem", "a.creds", "u")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5", 5.0),
        ("0.5", 0.5),
        ("5s", 5.0),
        ("500ms", 0.5),
        ("1m30s", 90.0),
        ("1h2m3.5s", 3723.5),
        ("250us", 0.00025),
        ("2h", 7200.0),
        ("1d", 86400.0),
    ],
)
def test_durations_are_numbers_of_seconds_or_go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5x", "-5s", "s", "1m30", "nan", "inf", "5 s"])
def test_a_bad_duration_is_refused_with_examples(text: str) -> None:
    with pytest.raises(ConfigError, match=r"invalid duration .*1m30s"):
        parse_duration(text)


def test_timeouts_take_go_durations_and_a_bad_one_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = build_parser()
    assert parser.parse_args(["submit", "--timeout", "1m30s", "math", "{}"]).timeout == 90.0
    assert parser.parse_args(["health", "--agent", "a", "--timeout", "500ms"]).timeout == 0.5
    with pytest.raises(SystemExit) as exited:
        parser.parse_args(["submit", "--timeout", "soon", "math", "{}"])
    assert exited.value.code == EXIT_USAGE
    assert "invalid duration 'soon'" in capsys.readouterr().err


def test_tlsfirst_is_a_flag_before_or_after_the_subcommand() -> None:
    parser = build_parser()
    assert parser.parse_args(["--tlsfirst", "agents"]).tls_first is True
    assert parser.parse_args(["agents", "--tls-first"]).tls_first is True
    assert parser.parse_args(["agents"]).tls_first is None


@pytest.mark.parametrize("command", [["demo"], ["server", "--port", "0"]])
@pytest.mark.parametrize("flag", [["-s", "nats://x:4222"], ["--context", "dev"], ["--prefix", "p"]])
def test_commands_that_start_their_own_server_take_no_connection_flags(
    command: list[str], flag: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*flag, *command])
    assert exited.value.code == EXIT_USAGE
    assert "takes no connection flags" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*command, *flag])
    assert "unrecognized arguments" in capsys.readouterr().err


def write_context(root: Path, name: str, **settings: object) -> None:
    (root / "nats" / "context").mkdir(parents=True, exist_ok=True)
    (root / "nats" / "context" / f"{name}.json").write_text(json.dumps(settings))


def test_a_context_maps_to_connection_options_with_paths_expanded(tmp_path: Path) -> None:
    write_context(
        tmp_path,
        "dev",
        url="nats://a:4222,nats://b:4222",
        user="u",
        password="p",
        creds="$SECRETS/u.creds",
        ca="file:///etc/ca.pem",
        cert="~/c.pem",
        key="",
        tls_first=True,
        inbox_prefix="_INBOX_u",
        description="ignored",
        color_scheme="",
    )
    environ = {"XDG_CONFIG_HOME": str(tmp_path), "SECRETS": "/s", "HOME": "/home/u"}
    fields = load_context_fields("dev", environ=environ)
    assert fields == {
        "url": "nats://a:4222,nats://b:4222",
        "user": "u",
        "password": "p",
        "creds": "/s/u.creds",
        "tls_ca": "/etc/ca.pem",
        "tls_cert": "/home/u/c.pem",
        "tls_first": True,
        "inbox_prefix": "_INBOX_u",
    }
    options = ConnectOptions.layered(fields)
    assert options.servers == ("nats://a:4222", "nats://b:4222")


def test_which_context_flag_then_env_then_selected_and_no_context(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        write_context(tmp_path, name, url=f"nats://{name}:4222")
    (tmp_path / "nats" / "context.txt").write_text("c\n")
    environ = {"XDG_CONFIG_HOME": str(tmp_path), "NATS_CONTEXT": "b"}
    assert load_context_fields("a", environ=environ)["url"] == "nats://a:4222"
    assert load_context_fields(None, environ=environ)["url"] == "nats://b:4222"
    del environ["NATS_CONTEXT"]
    assert load_context_fields(None, environ=environ)["url"] == "nats://c:4222"
    assert load_context_fields(None, environ=environ, use_selected=False) == {}
    assert load_context_fields("a", environ=environ, no_context=True) == {}
    path = tmp_path / "nats" / "context" / "a.json"
    assert load_context_fields(str(path), environ=environ)["url"] == "nats://a:4222"


@pytest.mark.parametrize(
    ("name", "settings", "error"),
    [
        ("nosuch", None, r"unknown NATS context 'nosuch' \(--context\)"),
        ("../x", None, r"invalid NATS context name"),
        ("jwt", {"user_jwt": "x"}, r"'jwt' sets 'user_jwt'"),
        ("dom", {"jetstream_domain": "hub"}, r"'dom' sets 'jetstream_domain'"),
        ("op", {"creds": "op://vault/item/creds"}, r"gives 'creds' as op:"),
    ],
)
def test_a_context_that_cannot_be_used_is_a_usage_error(
    tmp_path: Path, name: str, settings: dict[str, str] | None, error: str
) -> None:
    if settings is not None:
        write_context(tmp_path, name, **settings)
    with pytest.raises(ConfigError, match=error):
        load_context_fields(name, environ={"XDG_CONFIG_HOME": str(tmp_path)})


@pytest.mark.parametrize("command", ["submit", "health", "status", "agents", "monitor", "run"])
def test_every_help_ends_with_a_table_of_exit_codes(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    help_text = capsys.readouterr().out
    table = help_text[help_text.index("Exit codes:") :].splitlines()[1:]
    codes = [int(line.split()[0]) for line in table if line.strip()]
    assert codes[:6] == [0, 1, 2, 3, 4, 5], help_text
