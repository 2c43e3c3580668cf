"""Subjects are built and validated in one place."""

from __future__ import annotations

import pytest

from bus import BadInput, ConfigError, Subjects, new_task_id, validate_task_id


def test_default_subjects() -> None:
    s = Subjects()
    assert s.task("math") == "agents.task.math"
    assert s.agent("math-1") == "agents.agent.math-1"
    assert s.status("math-1", "completed") == "agents.status.math-1.completed"
    assert s.all_status() == "agents.status.>"
    assert s.status_of_state("failed") == "agents.status.*.failed"


def test_prefix_is_configurable_and_may_have_several_tokens() -> None:
    s = Subjects("team1.agents")
    assert s.task("math") == "team1.agents.task.math"
    assert s.capability_of("team1.agents.task.math") == "math"
    assert s.capability_of("agents.task.math") is None
    assert s.parse_status("team1.agents.status.m-1.online") == ("m-1", "online")
    assert s.parse_status("team1.agents.status.m-1") is None


@pytest.mark.parametrize("bad", ["", "a.b", "a b", "*", ">", "a>", "x" * 129, "ünïcode"])
def test_invalid_capabilities_and_ids_are_refused_with_a_reason(bad: str) -> None:
    with pytest.raises(ConfigError, match="subject token"):
        Subjects().task(bad)
    with pytest.raises(ConfigError, match="agent id"):
        Subjects().agent(bad)


@pytest.mark.parametrize("bad", ["", ".agents", "agents.", "a..b", "a b", "a.*"])
def test_invalid_prefixes_are_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match="prefix"):
        Subjects(bad)


def test_task_ids_are_unique_and_valid() -> None:
    ids = {new_task_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(validate_task_id(i) == i for i in list(ids)[:100])
    with pytest.raises(BadInput):
        validate_task_id("has space")


def test_direct_task_subjects_bind_the_capability_and_parse_back() -> None:
    s = Subjects("team1.agents")
    assert s.agent_task("math", "math-1") == "team1.agents.agent.math.math-1"
    assert s.parse_agent_task("team1.agents.agent.math.math-1") == ("math", "math-1")
    assert s.parse_agent_task("team1.agents.agent.math-1") is None  # the control address
    assert s.parse_agent_task("agents.agent.math.math-1") is None
    with pytest.raises(ConfigError, match="subject token"):
        s.agent_task("math.x", "math-1")
    with pytest.raises(ConfigError, match="agent id"):
        s.agent_task("math", "*")
