"""Creating the streams, the consumers and the bucket of durable dispatch.

Setting up the streams and the bucket is a step of its own (``callboard
setup``, run by a user that may create and update them), so that no running
role needs that power: a running daemon or submitter looks at each stream
(STREAM.INFO), creates one only if it is missing (which the shipped
permissions refuse it: it then says to run the setup), and never changes one.
Each capability's pull consumer is its daemons' own, created or updated at
start-up, idempotently, so any number of daemons may start at once.
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
            allow_rollup_hdrs=False,  # a writer could purge a key's history with one
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
    js: JetStreamContext, names: DurableNames, settings: DurableSettings, *, update: bool = False
) -> list[str]:
    """Create every missing stream (and the bucket's); with ``update`` (the setup
    step), also bring those that exist to ``settings``. Returns one line per stream
    saying what was done.

    Raises:
        ConfigError: the server refused a setting.
        ConnectionFailed: JetStream did not answer (or this user may not ask it:
            a stream is missing and only the setup step may create it).
    """
    return [await _ensure_stream(js, c, update=update) for c in stream_configs(names, settings)]


async def _ensure_stream(js: JetStreamContext, config: api.StreamConfig, *, update: bool) -> str:
    name = config.name or ""
    try:
        info: api.StreamInfo | None = await js.stream_info(name)
    except nats.js.errors.NotFoundError:
        info = None
    except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
        raise _unavailable(name, exc) from exc
    if info is None:
        try:
            await js.add_stream(config)
            return f"{name}: created"
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code != _STREAM_NAME_IN_USE:  # else another process was first
                raise _setup_error(name, exc) from exc
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
            raise _unavailable(name, exc, missing=True) from exc
    if update:
        try:
            await js.update_stream(config)
        except nats.js.errors.APIError as exc:
            raise _setup_error(name, exc) from exc
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
            raise _unavailable(name, exc) from exc
        log.info("stream %s brought to the configured settings", name)
        return f"{name}: up to date with the settings"
    differences = _differences(info.config, config) if info is not None else []
    if differences:
        log.warning(
            "stream %s differs from this process's [durable] settings (%s): the setup step "
            "('callboard setup') applies them; running roles never change a stream",
            name,
            ", ".join(differences),
        )
    return f"{name}: exists"


_COMPARED = (
    "max_age",
    "max_bytes",
    "max_msgs_per_subject",
    "duplicate_window",
    "num_replicas",
    "allow_rollup_hdrs",
)


def _differences(actual: api.StreamConfig, wanted: api.StreamConfig) -> list[str]:
    """``field: actual -> wanted`` for the settings a setup step would change."""
    found = []
    for field in _COMPARED:
        have, want = getattr(actual, field, None), getattr(wanted, field, None)
        if want is None or have == want or (field == "duplicate_window" and not want):
            continue  # not set: the server's default
        if isinstance(have, float | int) and isinstance(want, float | int):
            if abs(have - want) < 1e-6:
                continue
        found.append(f"{field}: {have} -> {want}")
    return found


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


def _unavailable(what: str | None, exc: Exception, *, missing: bool = False) -> ConnectionFailed:
    if missing:
        return ConnectionFailed(
            f"the JetStream stream {what} does not exist, and creating it got no answer "
            f"({type(exc).__name__}): run 'callboard setup' as the user that may create "
            "callboard's streams (deploy/nats/accounts.conf: setup), or check that JetStream "
            "is enabled for the account"
        )
    return ConnectionFailed(
        f"JetStream did not answer while setting up {what} ({type(exc).__name__}): "
        "is JetStream enabled on the server and for the account (nats-server -js, "
        "'jetstream: enabled'), and may this user publish to $JS.API.> and receive on its "
        "inbox (a permissions violation is then in the log above)?"
    )
