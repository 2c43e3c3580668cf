"""Request text is parsed in linear time, and nothing in it can break the parse (issue 15.9).

``callboard ask`` with 40,000 spaces used to take 27 s, all in the caller's
event loop: the decomposer's sentence split and ``payload_from_text``'s
trimming pattern rescanned a whitespace run from each of its positions.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import msgspec
import pytest

from actors.builtins import MathInput
from orchestrator import RuleDecomposer, payload_from_text

pytestmark = pytest.mark.anyio

RUN_LENGTH = 1_000_000
"""Characters of adversarial text per shape (a 1 MB payload): the quadratic parse needed
20 minutes (unclosed curly quotes) to days (a run of spaces) for it."""

BUDGET_SECONDS = 60.0
"""What the child process may take; the linear parse needs well under a second of it."""

ADVERSARIAL = {
    "a run of spaces": "'x' + ' ' * N + 'x'",
    "a connective before a run": "'x and' + ' ' * N + 'x'",
    "mixed whitespace before a question mark": "'what is 1' + '\\t\\n ' * (N // 3) + '?'",
    "unclosed curly quotes": "'“' * N",
    "a run of question marks and spaces": "'calculate 1' + ' ?' * (N // 2) + ' x'",
    "a lead-in of question words": "'what is ' * (N // 8) + 'calculate 6*7'",
}


@pytest.mark.parametrize("shape", ADVERSARIAL)
def test_adversarial_text_is_parsed_in_linear_time(shape: str) -> None:
    """Decompose a 1,000,000-character adversarial request and build its payload.

    Why a child process with a generous time limit, and not a ratio of timings:
    the parse is synchronous, so no ``fail_after`` scope can interrupt it, and a
    ratio of two timings flakes when the shared 2-core machine is busy. At this
    size the quadratic parse takes from 20 minutes to days (20,000 characters:
    0.5 s to over 30 s; 50 times the length, 2,500 times the time), the linear
    one under a second, so a machine 50 times slower than ours still passes,
    and the old code cannot.
    """
    program = textwrap.dedent(
        f"""
        import asyncio
        from orchestrator import RuleDecomposer, payload_from_text
        N = {RUN_LENGTH}
        text = {ADVERSARIAL[shape]}
        for step in asyncio.run(RuleDecomposer().decompose(text)):
            payload_from_text(step, ["what", "calculate"], "{{}}")
        payload_from_text(text, ["what", "calculate"], "{{}}")
        print("parsed")
        """
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", program],
            capture_output=True,
            text=True,
            timeout=BUDGET_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"parsing {shape} ({RUN_LENGTH:,} characters) took over {BUDGET_SECONDS} s")
    assert (done.returncode, done.stdout.strip()) == (0, "parsed"), done.stderr


async def test_the_split_is_unchanged_around_quotes_and_connectives() -> None:
    steps = await RuleDecomposer().decompose(
        'Summarize "Stop. Then go." then calculate 6*7.   After that,\n echo “a. b”, finally hi?'
    )
    assert steps == ['Summarize "Stop. Then go."', "calculate 6*7", "echo “a. b”", "hi"]


async def test_a_request_holding_the_old_placeholder_characters_is_kept_as_written() -> None:
    """The old split hid quotes behind ``\\x00<n>\\x00``; a request holding one crashed it."""
    steps = await RuleDecomposer().decompose("echo \x007\x00 then echo 'x'")
    assert steps == ["echo \x007\x00", "echo 'x'"]


def test_the_payload_loses_only_its_lead_in_and_closing_punctuation() -> None:
    schema = msgspec.json.encode(msgspec.json.schema(MathInput)).decode()
    text = "calculate : -  6*7 \t?!. "
    assert payload_from_text(text, ("calculate",), schema) == {"expression": "6*7"}
    assert payload_from_text("echo  ?. ", ("echo",), "{}") == ""
    assert payload_from_text("echo 'a ? b'?", ("echo",), "{}") == "a ? b"
