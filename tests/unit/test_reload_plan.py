"""What a config reload changes: slots after replica expansion, compared by key."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from actors import DaemonConfig
from actors._config import agent_slots, build_agent
from actors._reload import plan_reload
from bus import ConfigError


def config(*agents: dict[str, Any]) -> DaemonConfig:
    return msgspec.convert({"agents": list(agents)}, DaemonConfig)


def running(cfg: DaemonConfig) -> dict[str, Any]:
    """The running slots of ``cfg``, as the reloader keeps them (key → slot, agent id)."""
    return {slot.key: (slot, build_agent(slot).id) for slot in agent_slots(cfg)}


def test_slots_are_keyed_by_id_and_generated_ids_by_type_and_rank() -> None:
    slots = agent_slots(
        config(
            {"type": "math", "id": "math", "replicas": 2},
            {"type": "echo"},
            {"type": "echo", "replicas": 2},
            {"type": "summarize", "id": "sum"},
        )
    )
    assert [(s.key, s.agent_id) for s in slots] == [
        ("math-1", "math-1"),
        ("math-2", "math-2"),
        ("echo#1", None),
        ("echo#2", None),
        ("echo#3", None),
        ("sum", "sum"),
    ]


def test_repeated_ids_are_refused_before_any_agent_is_created() -> None:
    with pytest.raises(ConfigError, match="repeated: math-1"):
        agent_slots(
            config({"type": "math", "id": "math", "replicas": 2}, {"type": "nope", "id": "math-1"})
        )


@pytest.mark.anyio
async def test_a_plan_adds_removes_replaces_and_leaves_the_rest() -> None:
    before = config(
        {"type": "echo", "id": "a"},
        {"type": "math", "id": "b"},
        {"type": "echo", "id": "r", "max_concurrency": 4},
        {"type": "summarize"},
        {"type": "math", "id": "m", "replicas": 2},
    )
    now = running(before)
    after = config(
        {"type": "echo", "id": "a"},  # unchanged
        {"type": "summarize", "id": "c"},  # new
        {"type": "echo", "id": "r", "max_concurrency": 8},  # changed
        {"type": "summarize"},  # unchanged, though its id is generated
        {"type": "math", "id": "m", "replicas": 3},  # one more replica
    )
    plan = await plan_reload(now, after)
    assert sorted(a.id for _, a in plan.added) == ["c", "m-3"]
    assert plan.removed == ["b"]
    assert [(old, agent.id, changed) for old, _, agent, changed in plan.replaced] == [
        ("r", "r", ["max_concurrency"])
    ]
    assert plan.replaced[0][2].max_concurrency == 8


@pytest.mark.anyio
async def test_a_changed_type_or_options_replaces_a_generated_id_with_a_new_one() -> None:
    now = running(config({"type": "echo"}, {"type": "math", "id": "x"}))
    plan = await plan_reload(
        now, config({"type": "echo", "default_timeout": 5}, {"type": "echo", "id": "x"})
    )
    changes = {old: changed for old, _, _, changed in plan.replaced}
    echo_id = now["echo#1"][1]
    assert changes == {echo_id: ["default_timeout"], "x": ["type"]}
    assert next(a.id for old, _, a, _ in plan.replaced if old == echo_id) != echo_id


@pytest.mark.anyio
async def test_a_plan_that_cannot_build_an_agent_fails_whole() -> None:
    now = running(config({"type": "echo", "id": "a"}))
    with pytest.raises(ConfigError, match="unknown agent type 'nope'"):
        await plan_reload(now, config({"type": "math", "id": "b"}, {"type": "nope", "id": "c"}))
    with pytest.raises(ConfigError, match="cannot create agent of type 'echo'"):
        await plan_reload(now, config({"type": "echo", "id": "a", "options": {"colour": 1}}))
