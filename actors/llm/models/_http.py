"""What the HTTP model clients share: one connection pool, retries, and errors.

``OllamaModel`` and ``OpenAIModel`` send every request through ``ModelHTTP``.
It builds the ``httpx.AsyncClient`` from ``ModelSettings`` (``timeout`` is the
longest wait for a read, so between two streamed chunks; ``connect_timeout``
the longest wait for a connection), retries what may pass — a connection
error, a timeout, a 5xx, a 429 — with exponential backoff, jitter and the
server's ``Retry-After``, and translates every httpx error and HTTP status
into a ``ModelError`` that says what happened and what to do. Nothing from
httpx escapes it.

Only opening a response is retried: once a body is being read, tokens may
already have reached the caller, so a failure there is final.
"""

from __future__ import annotations

import errno
import itertools
import random
import socket
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, TypeVar

import anyio
import httpx
import msgspec
from httpx_sse import EventSource, SSEError, aconnect_sse

from ._errors import (
    ModelError,
    ModelRateLimited,
    ModelResponseError,
    ModelUnavailable,
)
from ._settings import ModelSettings

__all__ = [
    "MAX_RETRY_DELAY",
    "HTTPChatModel",
    "ModelHTTP",
    "ServerKind",
    "ServerMessage",
    "server_message",
]

MAX_RETRY_DELAY = 30.0
"""Longest wait between two attempts; a server asking for longer is not waited for."""

_JSON_HEADERS = {"Content-Type": "application/json"}

_T = TypeVar("_T")


@dataclass(frozen=True, kw_only=True)
class ServerMessage:
    """What a failed response said, whatever the provider's error shape.

    Attributes:
        text: the server's explanation (``error``, ``error.message``, or the body).
        code: the machine-readable code, when the server gave one.
    """

    text: str
    code: str | None = None


StatusHook = Callable[[int, ServerMessage], ModelError | None]
"""A provider's own reading of a failed status; None falls back to the shared one."""


@dataclass(frozen=True, kw_only=True)
class ServerKind:
    """How errors name a provider's server, and what it means by some statuses.

    Attributes:
        label: the server in a sentence (``Ollama server``).
        unreachable_hint: what to do when it cannot be reached.
        classify: its own errors for some statuses (a missing model, a bad key).
    """

    label: str
    unreachable_hint: str
    classify: StatusHook | None = None


def server_message(raw: bytes) -> ServerMessage:
    """The explanation in an error body: Ollama's, OpenAI's, vLLM's, or the raw text."""
    try:
        data = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return ServerMessage(text=_excerpt(raw))
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, str):
            return ServerMessage(text=error)
        if isinstance(error, dict):
            code = error.get("code") or error.get("type")
            return ServerMessage(
                text=str(error.get("message") or ""), code=None if code is None else str(code)
            )
    return ServerMessage(text=_excerpt(raw))


class ModelHTTP:
    """One model client's connection pool: lazily opened, retried, translated.

    Args:
        settings: resolved settings (``base_url`` set).
        kind: how errors name the server.
        headers: sent with every request (an ``Authorization``, say).
    """

    def __init__(
        self,
        settings: ModelSettings,
        kind: ServerKind,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if settings.base_url is None:
            raise ValueError("ModelHTTP needs resolved settings: call settings.resolved()")
        self.settings = settings
        self.base_url = settings.base_url
        self._kind = kind
        self._headers = dict(headers or {})
        self._client: httpx.AsyncClient | None = None
        self._closed = False

    @property
    def where(self) -> str:
        """The server, for messages: ``the Ollama server at http://...``."""
        return f"the {self._kind.label} at {self.base_url}"

    async def aclose(self) -> None:
        """Close the pool; idempotent, and later requests fail with ``ModelError``."""
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            with anyio.CancelScope(shield=True):
                await client.aclose()

    async def fetch(
        self, method: str, path: str, body: Any = None, *, allow: Collection[int] = ()
    ) -> httpx.Response:
        """A successful response, read whole (reading it is retried too).

        Args:
            allow: statuses to return rather than raise for (a missing optional endpoint).
        """

        def connect() -> AbstractAsyncContextManager[httpx.Response]:
            return self._stream(method, path, body)

        async with self._open(path, connect, _same, read=True, allow=allow) as response:
            return response

    @asynccontextmanager
    async def stream(
        self, method: str, path: str, body: Any = None
    ) -> AsyncIterator[httpx.Response]:
        """A successful response whose body is yet to be read."""

        def connect() -> AbstractAsyncContextManager[httpx.Response]:
            return self._stream(method, path, body)

        async with self._open(path, connect, _same) as response:
            yield response

    @asynccontextmanager
    async def events(self, path: str, body: Any) -> AsyncIterator[EventSource]:
        """A successful server-sent-events response to a POST."""

        def connect() -> AbstractAsyncContextManager[EventSource]:
            return aconnect_sse(
                self._http(), "POST", path, content=_encode(body), headers=dict(_JSON_HEADERS)
            )

        async with self._open(path, connect, _response_of) as source:
            yield source

    def _http(self) -> httpx.AsyncClient:
        if self._closed:
            raise ModelError(f"the client for {self.where} is closed")
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.base_url,
                headers=self._headers,
                timeout=httpx.Timeout(self.settings.timeout, connect=self.settings.connect_timeout),
            )
        return self._client

    def _stream(
        self, method: str, path: str, body: Any
    ) -> AbstractAsyncContextManager[httpx.Response]:
        if body is None:
            return self._http().stream(method, path)
        return self._http().stream(method, path, content=_encode(body), headers=_JSON_HEADERS)

    @asynccontextmanager
    async def _open(
        self,
        path: str,
        connect: Callable[[], AbstractAsyncContextManager[_T]],
        response_of: Callable[[_T], httpx.Response],
        *,
        read: bool = False,
        allow: Collection[int] = (),
    ) -> AsyncIterator[_T]:
        stack, opened = await self._open_with_retries(
            path, connect, response_of, read=read, allow=allow
        )
        try:
            yield opened
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise self._transport_error(exc, attempts=1, reading=True) from exc
        finally:
            await _close(stack)

    async def _open_with_retries(
        self,
        path: str,
        connect: Callable[[], AbstractAsyncContextManager[_T]],
        response_of: Callable[[_T], httpx.Response],
        *,
        read: bool,
        allow: Collection[int],
    ) -> tuple[AsyncExitStack, _T]:
        attempts = self.settings.retries + 1
        for attempt in range(1, attempts + 1):
            stack = AsyncExitStack()
            cause: BaseException | None = None
            reading = False
            try:
                opened = await stack.enter_async_context(connect())
                response = response_of(opened)
                if response.is_success or response.status_code in allow:
                    if read:
                        reading = True
                        await response.aread()
                    return stack, opened
                raw = await response.aread()
                error = self._status_error(response, raw, path, attempts=attempt)
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                error = self._transport_error(exc, attempts=attempt, reading=reading)
                cause = exc
            except BaseException:
                await _close(stack)
                raise
            await _close(stack)
            retry_after = error.retry_after if isinstance(error, ModelRateLimited) else None
            if (
                not isinstance(error, ModelUnavailable)
                or attempt == attempts
                or (retry_after is not None and retry_after > MAX_RETRY_DELAY)
            ):
                raise error from cause
            await anyio.sleep(self._delay(attempt, retry_after))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        # equal jitter: clients that failed together do not retry together
        backoff = min(self.settings.retry_backoff * 2.0 ** (attempt - 1), MAX_RETRY_DELAY)
        return max(backoff * random.uniform(0.5, 1.0), retry_after or 0.0)

    def _status_error(
        self, response: httpx.Response, raw: bytes, path: str, *, attempts: int
    ) -> ModelError:
        status = response.status_code
        message = server_message(raw)
        if self._kind.classify is not None:
            special = self._kind.classify(status, message)
            if special is not None:
                return special
        said = f": {message.text}" if message.text else ""
        tried = f" (gave up after {attempts} attempts)" if attempts > 1 else ""
        what = f"{self.where} answered HTTP {status} to {response.request.method} {path}{said}"
        if status == 429:
            return ModelRateLimited(
                f"{self.where} is rate limiting requests (HTTP 429{said}){tried}; "
                "wait and retry, or send fewer requests",
                retry_after=_retry_after(response.headers),
            )
        if status >= 500:
            return ModelUnavailable(f"{what}{tried}; see the server's log, or retry later")
        if status == 404:
            return ModelError(f"{what}; is base_url right for this kind of server?")
        return ModelError(f"{what}; the server refused the request, retrying will not help")

    def _transport_error(
        self, exc: httpx.HTTPError | httpx.InvalidURL, *, attempts: int, reading: bool
    ) -> ModelError:
        tried = f" (gave up after {attempts} attempts)" if attempts > 1 else ""
        if isinstance(exc, httpx.ConnectTimeout):
            return ModelUnavailable(
                f"cannot reach {self.where}: no connection within "
                f"{self.settings.connect_timeout:g} s{tried}; {self._kind.unreachable_hint}"
            )
        if isinstance(exc, httpx.ConnectError):
            return ModelUnavailable(
                f"cannot reach {self.where}: {_reason(exc)}{tried}; {self._kind.unreachable_hint}"
            )
        if isinstance(exc, httpx.ReadTimeout):
            moment = "in the middle of the answer" if reading else "after the request"
            return ModelUnavailable(
                f"{self.where} sent nothing for {self.settings.timeout:g} s {moment}{tried}; "
                f"the model {self.settings.model!r} may be loading or overloaded: "
                "raise `timeout` or retry later"
            )
        if isinstance(exc, httpx.TimeoutException):
            return ModelUnavailable(f"{self.where} timed out ({type(exc).__name__}){tried}")
        if isinstance(exc, SSEError):
            return ModelResponseError(f"{self.where} did not answer with an event stream: {exc}")
        if isinstance(exc, httpx.RemoteProtocolError) and reading:
            return ModelResponseError(
                f"{self.where} closed the connection before the answer was complete "
                f"(truncated: {exc}); retry, and see the server's log if it happens again"
            )
        if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
            return ModelError(
                f"base_url {self.base_url!r} is not a usable URL ({exc}); "
                "use http://host:port or https://host"
            )
        if isinstance(exc, httpx.TransportError):
            return ModelUnavailable(f"lost the connection to {self.where}: {_reason(exc)}{tried}")
        return ModelError(f"request to {self.where} failed: {exc}")


class HTTPChatModel:
    """What every HTTP model client shares: settings, the connection pool, names.

    Subclasses say which server they speak to (``provider``, ``server_label``,
    ``unreachable_hint``), add request headers (``headers()``) and translate
    their server's error statuses (``_classify``).

    Args:
        settings: resolved settings (``create_model`` resolves them); without a
            ``base_url``, the provider's default is used and no environment is read.
    """

    provider: ClassVar[str] = ""
    server_label: ClassVar[str] = ""
    unreachable_hint: ClassVar[str] = ""

    def __init__(self, settings: ModelSettings) -> None:
        if settings.base_url is None:
            settings = settings.resolved(environ={})
        self.settings = settings
        self._http = ModelHTTP(
            settings,
            ServerKind(
                label=self.server_label,
                unreachable_hint=self.unreachable_hint,
                classify=self._classify,
            ),
            headers=self.headers(),
        )
        self._call_ids = itertools.count(1)

    @property
    def name(self) -> str:
        return f"{self.provider}:{self.settings.model}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.settings.model!r} at {self.settings.base_url})"

    def headers(self) -> dict[str, str]:
        """Headers sent with every request."""
        return {}

    def new_call_id(self) -> str:
        """An id for a tool call the server gave none."""
        return f"call_{next(self._call_ids)}"

    def _classify(self, status: int, message: ServerMessage) -> ModelError | None:
        """This server's reading of an error status; None for the common one."""
        return None

    async def aclose(self) -> None:
        await self._http.aclose()


def _same(response: httpx.Response) -> httpx.Response:
    return response


def _response_of(source: EventSource) -> httpx.Response:
    return source.response


def _encode(body: Any) -> bytes:
    return msgspec.json.encode(body)


async def _close(stack: AsyncExitStack) -> None:
    # a cancelled caller still returns its connection to the pool
    with anyio.CancelScope(shield=True):
        await stack.aclose()


def _reason(exc: BaseException) -> str:
    """The root cause in words (``connection refused``), not httpx's summary of it."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, socket.gaierror):
            return f"unknown host ({seen.strerror})"
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused"
        if isinstance(seen, ConnectionResetError):
            return "connection reset by the server"
        if isinstance(seen, OSError) and seen.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            return "no route to host"
        seen = seen.__cause__ or seen.__context__
    return str(exc) or type(exc).__name__


def _retry_after(headers: httpx.Headers) -> float | None:
    """Seconds the server asked to wait: ``Retry-After`` (seconds or a date) or ``-ms``."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _excerpt(raw: bytes, limit: int = 300) -> str:
    text = raw.decode("utf-8", errors="replace").strip()
    return text if len(text) <= limit else f"{text[:limit]}..."
