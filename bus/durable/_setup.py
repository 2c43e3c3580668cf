"""Creating the streams, the consumers and the bucket of durable dispatch.

Each is created or brought to the settings at start-up, idempotently, so any
number of daemons may start at once. A submitter only creates what is missing
(so a task can wait for agents that have never started) and never changes
what a daemon configured.
"""

from __future__ import annotations

import logging
from typing import Any

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext, api

from .._errors import ConfigError, ConnectionFailed
from ._names import DurableNames
from ._settings import DurableSettings

__all__ = ["ensure_consumer", "ensure_durable", "stream_configs"]

log = logging.getLogger("callboard.durable")

_STREAM_NAME_IN_USE = 10058
"""JetStream's "stream name already in use with a different configuration"."""


def _storage(settings: DurableSettings) -> api.StorageType:
    return api.StorageType.FILE if settings.storage == "file" else api.StorageType.MEMORY


def stream_configs(names: DurableNames, settings: DurableSettings) -> list[api.StreamConfig]:
    """The streams of one system: tasks, dead letters, task records, status events."""

    def stream(**fields: Any) -> api.StreamConfig:
        return api.StreamConfig(
            num_replicas=settings.replicas,
            storage=_storage(settings),
            max_bytes=settings.max_bytes,
            **fields,
        )

    configs = [
        stream(
            name=names.tasks_stream,
            description="callboard durable tasks: a work queue per capability",
            subjects=[names.all_jobs()],
            retention=api.RetentionPolicy.WORK_QUEUE,
            discard=api.DiscardPolicy.NEW,
            max_age=settings.task_max_age,
            duplicate_window=min(settings.duplicate_window, settings.task_max_age),
        ),
        stream(
            name=names.dead_stream,
            description="callboard dead letters: tasks that used up their attempts",
            subjects=[names.all_dead()],
            retention=api.RetentionPolicy.LIMITS,
            max_age=settings.task_max_age,
        ),
        stream(
            name=f"KV_{names.bucket}",
            description="callboard task records (state, result, error) by task ID",
            subjects=[f"$KV.{names.bucket}.>"],
            retention=api.RetentionPolicy.LIMITS,
            discard=api.DiscardPolicy.NEW,
            max_age=settings.result_ttl,
            max_msgs_per_subject=settings.history,
            duplicate_window=min(settings.duplicate_window, settings.result_ttl),
            allow_rollup_hdrs=True,
            allow_direct=True,
            deny_delete=True,
        ),
    ]
    if settings.status_max_age > 0:
        configs.append(
            stream(
                name=names.status_stream,
                description="callboard status events, kept for replay",
                subjects=[names.subjects.all_status()],
                retention=api.RetentionPolicy.LIMITS,
                discard=api.DiscardPolicy.OLD,
                max_age=settings.status_max_age,
            )
        )
    return configs


async def ensure_durable(
    js: JetStreamContext, names: DurableNames, settings: DurableSettings, *, update: bool = True
) -> None:
    """Create every stream (and the bucket's), or bring it to ``settings`` if ``update``."""
    for config in stream_configs(names, settings):
        await _ensure_stream(js, config, update=update)


async def _ensure_stream(js: JetStreamContext, config: api.StreamConfig, *, update: bool) -> None:
    try:
        await js.add_stream(config)
        return
    except nats.js.errors.BadRequestError as exc:
        if exc.err_code != _STREAM_NAME_IN_USE:
            raise _setup_error(config.name, exc) from exc
    except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
        raise _unavailable(config.name, exc) from exc
    if not update:
        return
    try:
        await js.update_stream(config)
        log.info("stream %s updated to the configured settings", config.name)
    except nats.js.errors.APIError as exc:
        raise _setup_error(config.name, exc) from exc


async def ensure_consumer(
    js: JetStreamContext,
    names: DurableNames,
    capability: str,
    settings: DurableSettings,
    *,
    max_ack_pending: int,
) -> str:
    """Create (or update) the pull consumer that every replica of ``capability`` shares.

    The server delivers a task ``max_deliver + 1`` times at most: the extra
    delivery only tells an agent that the previous attempt died with its
    process (a task that crashes every agent), so it is dead-lettered unrun.
    """
    name = names.consumer(capability)
    config = api.ConsumerConfig(
        name=name,
        durable_name=name,
        description=f"callboard agents of capability {capability}",
        filter_subject=names.job(capability),
        ack_policy=api.AckPolicy.EXPLICIT,
        deliver_policy=api.DeliverPolicy.ALL,
        ack_wait=settings.ack_wait,
        max_deliver=settings.max_deliver + 1,
        max_ack_pending=max_ack_pending,
        max_waiting=512,
    )
    try:
        await js.add_consumer(names.tasks_stream, config)
    except nats.js.errors.APIError as exc:
        raise _setup_error(f"{names.tasks_stream} > {name}", exc) from exc
    except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
        raise _unavailable(names.tasks_stream, exc) from exc
    return name


def _setup_error(what: str | None, exc: nats.js.errors.APIError) -> ConfigError:
    return ConfigError(
        f"JetStream refused the settings of {what}: {exc.description} (code {exc.err_code}); "
        "a stream's retention and storage cannot change once created - delete it with "
        "'nats stream rm' or pick another prefix"
    )


def _unavailable(what: str | None, exc: Exception) -> ConnectionFailed:
    return ConnectionFailed(
        f"JetStream did not answer while setting up {what} ({type(exc).__name__}): "
        "is JetStream enabled on the server and for the account (nats-server -js, "
        "'jetstream: enabled'), and may this user publish to $JS.API.> and receive on its "
        "inbox (a permissions violation is then in the log above)?"
    )
