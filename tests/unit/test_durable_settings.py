"""Durable mode without a server: settings, names, stream configs, records."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from nats.js import api

from actors import load_config
from bus import AgentError, BadInput, ConfigError, DeadlineExceeded, ErrorInfo, TaskCancelled
from bus.durable import (
    CorruptRecord,
    DurableNames,
    DurableSettings,
    TaskRecord,
    TaskState,
    decode_record,
    encode_record,
    result_of,
    split_task_ref,
    stream_configs,
    validate_durable_task_id,
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agents.toml"
    path.write_text(text + '\n[[agents]]\ntype = "echo"\n')
    return path


def test_a_durable_section_turns_durable_mode_on(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")).durable is None
    assert load_config(write(tmp_path, "[durable]")).durable == DurableSettings()
    config = load_config(write(tmp_path, '[durable]\nstorage = "memory"\nreplicas = 3'))
    assert config.durable == DurableSettings(storage="memory", replicas=3)


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("[durable]\nack_wiat = 3", "ack_wiat"),
        ('[durable]\nstorage = "disk"', "storage"),
        ("[durable]\nmax_deliver = 0", "max_deliver"),
        ("[durable]\nreplicas = 7", "replicas"),
    ],
)
def test_bad_durable_settings_are_reported_with_their_key(
    tmp_path: Path, text: str, complaint: str
) -> None:
    with pytest.raises(ConfigError, match=complaint):
        load_config(write(tmp_path, text))


def test_retries_back_off_and_are_capped() -> None:
    settings = DurableSettings(retry_delay=1.0, ack_wait=2.0)
    assert [settings.retry_after(n) for n in (1, 2, 3, 4, 5, 6)] == [1, 2, 4, 8, 16, 20]


def test_names_follow_the_prefix() -> None:
    names = DurableNames("team1.agents")
    assert (names.tasks_stream, names.dead_stream, names.status_stream, names.bucket) == (
        "TEAM1_AGENTS_TASKS",
        "TEAM1_AGENTS_DEAD",
        "TEAM1_AGENTS_STATUS",
        "TEAM1_AGENTS_TASKS",
    )
    assert names.job("math") == "team1.agents.jobs.math"
    assert names.dead("math") == "team1.agents.dead.math"
    assert names.key_subject("abc") == "$KV.TEAM1_AGENTS_TASKS.abc"
    assert names.record_key("math", "abc") == "math.abc"  # an agent user writes math.*
    assert names.submission_key("math", "abc") == "math.abc.submitted"
    with pytest.raises(ConfigError):
        names.job("a.b")


def test_a_task_is_named_by_its_id_or_by_its_records_key() -> None:
    assert split_task_ref("abc") == (None, "abc")
    assert split_task_ref("math.abc") == ("math", "abc")
    for bad in ("a.b.c", "math.", ".abc", "ma th.abc"):
        with pytest.raises(BadInput):
            split_task_ref(bad)


@pytest.mark.parametrize("task_id", ["", "a.b", "a b", "x" * 129, "a*", "ü"])
def test_durable_task_ids_must_be_bucket_keys(task_id: str) -> None:
    with pytest.raises(BadInput, match="invalid durable task id"):
        validate_durable_task_id(task_id)


def test_the_streams_are_a_work_queue_dead_letters_records_and_status() -> None:
    settings = DurableSettings(storage="memory", replicas=3, status_max_age=60)
    configs = {c.name: c for c in stream_configs(DurableNames(), settings)}
    tasks = configs["AGENTS_TASKS"]
    assert tasks.retention == api.RetentionPolicy.WORK_QUEUE
    assert tasks.discard == api.DiscardPolicy.NEW  # a full queue refuses, never drops
    assert tasks.subjects == ["agents.jobs.>"]
    assert configs["KV_AGENTS_TASKS"].max_msgs_per_subject == settings.history
    assert configs["AGENTS_STATUS"].max_age == 60
    assert all(
        c.num_replicas == 3 and c.storage == api.StorageType.MEMORY for c in configs.values()
    )
    no_status = stream_configs(DurableNames(), DurableSettings(status_max_age=0))
    assert "AGENTS_STATUS" not in {c.name for c in no_status}


def record(state: TaskState, **fields: object) -> TaskRecord:
    return TaskRecord(
        task_id="t1", capability="math", state=state, submitted_at=1.0, updated_at=2.0, **fields
    )


def test_records_round_trip_with_the_result_as_raw_json() -> None:
    done = record(TaskState.COMPLETED, result=msgspec.Raw(b'{"value":42}'), attempts=1)
    data = encode_record(done)
    assert msgspec.json.decode(data)["result"] == {"value": 42}
    assert result_of(decode_record(data)) == {"value": 42}
    assert decode_record(encode_record(record(TaskState.SUBMITTED))).done is False


def test_a_failed_record_raises_the_error_of_its_code() -> None:
    error = ErrorInfo(code=408, type="timeout", message="too slow")
    with pytest.raises(DeadlineExceeded, match="too slow"):
        result_of(record(TaskState.FAILED, error=error, agent="m-1"))
    boom = ErrorInfo(code=500, type="agent_failure", message="boom")
    with pytest.raises(AgentError, match="dead-lettered after 5 attempt"):
        result_of(record(TaskState.DEAD_LETTERED, error=boom, attempts=5))
    with pytest.raises(TaskCancelled):
        result_of(record(TaskState.CANCELLED, error=boom))


def test_a_record_that_is_not_the_one_its_key_names_is_corrupt() -> None:
    data = encode_record(
        TaskRecord(
            task_id="abc",
            capability="echo",
            state=TaskState.COMPLETED,
            submitted_at=1.0,
            updated_at=2.0,
        )
    )
    assert decode_record(data, task_id="abc", capability="echo").capability == "echo"
    for task_id, capability in (("abc", "math"), ("xyz", "echo")):
        with pytest.raises(CorruptRecord, match="says it is task 'abc' of 'echo'"):
            decode_record(data, task_id=task_id, capability=capability)
    with pytest.raises(CorruptRecord, match="is not a task record"):
        decode_record(b'{"task_id": 1}', task_id="abc")
