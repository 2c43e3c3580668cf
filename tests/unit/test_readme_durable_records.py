"""The README's table of durable record fields is the record's format: the same
fields as ``bus.durable.TaskRecord``, required exactly where the struct has no
default, so the documentation for other clients cannot drift from the code."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec

from bus.durable import TaskRecord, TaskState

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "### Durable records for other clients"
_ROW = re.compile(r"^\| `(?P<field>[a-z_]+)` \| (?P<type>[^|]+) \| (?P<required>yes|no) \|")


def _record_table() -> dict[str, str]:
    """``field -> yes/no`` from the field table of the README's section."""
    text = README.read_text(encoding="utf-8")
    assert SECTION in text, f"the README has no {SECTION!r} section"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    rows = [_ROW.match(line) for line in section.splitlines()]
    return {m["field"]: m["required"] for m in rows if m is not None}


def test_the_readme_lists_exactly_the_fields_of_a_task_record() -> None:
    documented = _record_table()
    fields = {f.encode_name: f for f in msgspec.structs.fields(TaskRecord)}
    assert set(documented) == set(fields)
    required = {name for name, f in fields.items() if f.required}
    assert {name for name, req in documented.items() if req == "yes"} == required


def test_the_readme_names_every_state() -> None:
    text = README.read_text(encoding="utf-8").split(SECTION, 1)[1].split("\n## ", 1)[0]
    state_row = next(line for line in text.splitlines() if line.startswith("| `state` |"))
    assert set(re.findall(r"`([a-z-]+)`", state_row)) - {"state"} == {s.value for s in TaskState}
