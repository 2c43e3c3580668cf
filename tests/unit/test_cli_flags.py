"""Connection flags: callboard's names and the ``nats`` CLI's spellings."""

from __future__ import annotations

from orchestrator.cli import build_parser


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
