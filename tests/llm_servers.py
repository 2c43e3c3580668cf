"""Fake model servers for tests: Ollama's and OpenAI's wire formats over a real socket.

Each fake is a ``ThreadingHTTPServer`` on 127.0.0.1 (a free port), serving from
a daemon thread, so any HTTP client — the model clients in this process, or a
daemon in another — talks to it as to the real thing: JSON or streamed bodies
(NDJSON for Ollama, server-sent events for OpenAI) in chunked transfer encoding.
It answers from a script, one entry per chat request, and records every request::

    with FakeOllama(models=["llama3.2"]) as server:
        server.script("Hello!", Reply(tool_calls=[Call("math", {"expression": "6*7"})]))
        model = OllamaModel(ModelSettings(model="llama3.2", base_url=server.url))
        ...
        assert server.chat_requests[0].body["messages"][0]["role"] == "user"

The API:

``FakeOllama(models=("llama3.2",), default=None)``, ``FakeOpenAI(models=("gpt-4o-mini",),
default=None, api_key=None, list_models=True)``
    Context managers (or ``start()`` / ``close()``): exiting releases every
    ``Hang``, stops the server, closes every connection and joins every thread.
    ``models`` are the models it has: a chat naming another gets the provider's
    "model not found" 404, and ``/api/tags`` or ``/v1/models`` lists them.
    ``default`` answers a chat when the script is used up (otherwise: HTTP 400
    saying so). ``FakeOpenAI(api_key=...)`` wants ``Authorization: Bearer <key>``
    (401 if not); ``list_models=False`` makes ``/v1/models`` a 404.
``server.url``
    What ``base_url`` takes: ``http://127.0.0.1:PORT`` (Ollama), ``.../v1`` (OpenAI).
``server.script(*entries)``
    Queue answers; each chat request takes the next.
``server.requests``, ``server.chat_requests``
    Every request (``Recorded``: method, path, lower-case headers, decoded JSON
    body), and those to the chat endpoint. ``server.wait_for_requests(n)`` blocks
    until ``n`` have come (from another thread: ``anyio.to_thread.run_sync``).
``server.remaining``
    Entries not yet used.

Script entries (streamed or not as the request's ``stream`` asks):

``"text"`` or ``Reply(text, tool_calls=[Call(name, arguments, id=None)], chunks=None,
finish_reason=None, prompt_tokens=12, completion_tokens=None, fragments=3)``
    An answer. ``chunks`` are the streamed pieces (default: word by word);
    ``arguments`` is a dict, or a raw string sent as is (to test bad JSON);
    OpenAI streams each call's arguments in ``fragments`` pieces.
``HTTPError(status, message="", retry_after=None, code=None)``
    A failed status, with the provider's error body (and ``Retry-After``).
``ModelMissing()``
    The provider's answer for a model it does not have.
``Malformed(body=b"...")``
    A 200 whose body (or stream) is not JSON.
``Truncated(reply, after=1, abort=True)``
    Streams ``after`` frames of ``reply``, then drops the connection (``abort``)
    or ends the body cleanly without the final frame.
``Hang(reply=None, after=0)``
    Sends ``after`` frames (none: not even headers), then waits until the server
    closes; the client's timeout is what ends it.
``StreamError(message, reply="", after=1)``
    Streams ``after`` frames, then the provider's in-stream error frame (a
    request that is not streamed gets HTTP 500 instead).
``callable(body) -> entry``
    Answer from the request (say, echo the tool result it was sent).
"""

from __future__ import annotations

import itertools
import re
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import KW_ONLY, dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, ClassVar, Self, TypeAlias

import msgspec

__all__ = [
    "Call",
    "Entry",
    "FakeModelServer",
    "FakeOllama",
    "FakeOpenAI",
    "HTTPError",
    "Hang",
    "Malformed",
    "ModelMissing",
    "Recorded",
    "Reply",
    "StreamError",
    "Truncated",
    "closed_port_url",
]


@dataclass(frozen=True)
class Call:
    """A tool call in a scripted reply; ``arguments`` as a dict, or raw text."""

    name: str
    arguments: dict[str, Any] | str = field(default_factory=dict)
    id: str | None = None


@dataclass(frozen=True)
class Reply:
    """A scripted answer: text, tool calls, or both (all but ``text`` by keyword)."""

    text: str = ""
    _: KW_ONLY
    tool_calls: Sequence[Call] = ()
    chunks: Sequence[str] | None = None
    finish_reason: str | None = None
    prompt_tokens: int = 12
    completion_tokens: int | None = None
    fragments: int = 3

    @property
    def pieces(self) -> list[str]:
        if self.chunks is not None:
            return list(self.chunks)
        return re.findall(r"\s*\S+\s*$|\s*\S+", self.text) or ([self.text] if self.text else [])

    @property
    def output_tokens(self) -> int:
        if self.completion_tokens is not None:
            return self.completion_tokens
        return max(1, len(self.pieces) + len(self.tool_calls))


@dataclass(frozen=True)
class HTTPError:
    """A failed status with the provider's error body."""

    status: int
    message: str = ""
    retry_after: float | None = None
    code: str | None = None


@dataclass(frozen=True)
class ModelMissing:
    """The provider's 404 for a model it does not have."""


@dataclass(frozen=True)
class Malformed:
    """A 200 whose body is not JSON."""

    body: bytes = b"this is not JSON {"


@dataclass(frozen=True)
class Truncated:
    """A stream cut after ``after`` frames: dropped (``abort``) or ended early."""

    reply: Reply | str = "never finished"
    after: int = 1
    abort: bool = True


@dataclass(frozen=True)
class Hang:
    """Send ``after`` frames of ``reply`` (none: no headers), then wait for the server to close."""

    reply: Reply | str | None = None
    after: int = 0


@dataclass(frozen=True)
class StreamError:
    """The provider's in-stream error after ``after`` frames of ``reply``."""

    message: str
    reply: Reply | str = ""
    after: int = 1


Fault: TypeAlias = HTTPError | ModelMissing | Malformed | Truncated | Hang | StreamError
Entry: TypeAlias = "str | Reply | Fault | Callable[[Any], Entry]"


@dataclass(frozen=True)
class Recorded:
    """One request the server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


def closed_port_url() -> str:
    """``http://127.0.0.1:PORT`` where nothing listens: connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _encode(value: Any) -> bytes:
    return msgspec.json.encode(value)


def _as_reply(value: Reply | str) -> Reply:
    return Reply(value) if isinstance(value, str) else value


def _tagged(name: str) -> str:
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


class FakeModelServer:
    """What both fakes share: the socket, the script, the record, the shutdown."""

    chat_path: ClassVar[str]
    url_suffix: ClassVar[str] = ""
    stream_by_default: ClassVar[bool]
    stream_type: ClassVar[str]

    def __init__(self, *, models: Iterable[str], default: Entry | None = None) -> None:
        self.models = list(models)
        self.default = default
        self.requests: list[Recorded] = []
        self.errors: list[BaseException] = []
        self._script: deque[Entry] = deque()
        self._changed = threading.Condition()
        self._closing = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> Self:
        self._httpd = _HTTPServer(self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{type(self).__name__}:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Release hangs, stop serving, close every connection, join every thread."""
        if self._httpd is None or self._thread is None:
            return
        self._closing.set()
        self._httpd.shutdown()
        self._httpd.drop_connections()
        self._httpd.server_close()
        self._thread.join()
        self._httpd = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.url_suffix}"

    # -- script and record ---------------------------------------------------------

    def script(self, *entries: Entry) -> None:
        with self._changed:
            self._script.extend(entries)

    @property
    def remaining(self) -> int:
        with self._changed:
            return len(self._script)

    @property
    def chat_requests(self) -> list[Recorded]:
        with self._changed:
            return [r for r in self.requests if r.path == self.chat_path]

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[Recorded]:
        """Block until ``count`` requests have come; TimeoutError if not in time."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.requests) >= count, timeout):
                raise TimeoutError(f"{len(self.requests)} requests came, not {count}")
            return list(self.requests)

    def _record(self, request: Recorded) -> int:
        with self._changed:
            self.requests.append(request)
            self._changed.notify_all()
            return len(self.requests)

    def _next_entry(self, number: int) -> Entry:
        with self._changed:
            if self._script:
                return self._script.popleft()
        if self.default is not None:
            return self.default
        return HTTPError(400, f"{type(self).__name__} has no scripted reply for request {number}")

    # -- what each provider says (overridden) ------------------------------------------

    def has_model(self, model: str) -> bool:
        return model in self.models

    def get(self, path: str, handler: _Handler) -> None:
        handler.send_body(404, b"404 page not found", "text/plain")

    def authorized(self, handler: _Handler) -> bool:
        return True

    def stream_frames(self, reply: Reply, body: dict[str, Any]) -> list[bytes]:
        raise NotImplementedError

    def whole(self, reply: Reply, body: dict[str, Any]) -> bytes:
        raise NotImplementedError

    def error_body(self, status: int, message: str, code: str | None) -> bytes:
        raise NotImplementedError

    def error_frame(self, message: str) -> bytes:
        raise NotImplementedError

    def missing_model(self, model: str) -> HTTPError:
        raise NotImplementedError

    def malformed_frames(self, data: bytes) -> list[bytes]:
        raise NotImplementedError

    # -- answering a chat ----------------------------------------------------------------

    def answer_chat(self, handler: _Handler, body: Any, number: int) -> None:
        if not isinstance(body, dict):
            self.answer(handler, HTTPError(400, "the request body is not a JSON object"), {})
            return
        model = str(body.get("model", ""))
        if not self.has_model(model):
            self.answer(handler, self.missing_model(model), body)
            return
        self.answer(handler, self._next_entry(number), body)

    def answer(self, handler: _Handler, entry: Entry, body: dict[str, Any]) -> None:
        while callable(entry):
            entry = entry(body)
        streaming = bool(body.get("stream", self.stream_by_default))
        if isinstance(entry, str | Reply):
            reply = _as_reply(entry)
            if streaming:
                handler.send_stream(self.stream_type, self.stream_frames(reply, body))
            else:
                handler.send_body(200, self.whole(reply, body))
        elif isinstance(entry, HTTPError):
            headers = {}
            if entry.retry_after is not None:
                headers["Retry-After"] = f"{entry.retry_after:g}"
            message = entry.message or HTTPStatus(entry.status).phrase
            handler.send_body(
                entry.status, self.error_body(entry.status, message, entry.code), headers=headers
            )
        elif isinstance(entry, ModelMissing):
            self.answer(handler, self.missing_model(str(body.get("model", ""))), body)
        elif isinstance(entry, Malformed):
            if streaming:
                handler.send_stream(self.stream_type, self.malformed_frames(entry.body))
            else:
                handler.send_body(200, entry.body)
        elif isinstance(entry, Truncated):
            reply = _as_reply(entry.reply)
            if streaming:
                frames = self.stream_frames(reply, body)[: entry.after]
                handler.send_stream(self.stream_type, frames, end=not entry.abort)
            else:
                handler.send_cut(self.whole(reply, body))
        elif isinstance(entry, Hang):
            if streaming and entry.reply is not None and entry.after > 0:
                frames = self.stream_frames(_as_reply(entry.reply), body)[: entry.after]
                handler.send_stream(self.stream_type, frames, end=False)
            self._closing.wait()
            handler.close_connection = True
        elif isinstance(entry, StreamError):
            if streaming:
                frames = self.stream_frames(_as_reply(entry.reply), body)[: entry.after]
                handler.send_stream(self.stream_type, [*frames, self.error_frame(entry.message)])
            else:
                handler.send_body(500, self.error_body(500, entry.message, None))
        else:
            raise TypeError(f"not a script entry: {entry!r}")


class FakeOllama(FakeModelServer):
    """Ollama's native API: ``POST /api/chat`` (NDJSON when streaming), ``GET /api/tags``."""

    chat_path = "/api/chat"
    stream_by_default = True  # Ollama streams unless told "stream": false
    stream_type = "application/x-ndjson"

    def __init__(self, *, models: Iterable[str] = ("llama3.2",), default: Entry | None = None):
        super().__init__(models=models, default=default)

    def has_model(self, model: str) -> bool:
        return _tagged(model) in {_tagged(name) for name in self.models}

    def get(self, path: str, handler: _Handler) -> None:
        if path != "/api/tags":
            super().get(path, handler)
            return
        models = [
            {
                "name": _tagged(name),
                "model": _tagged(name),
                "modified_at": "2025-01-01T00:00:00Z",
                "size": 2019393189,
                "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
                "details": {"format": "gguf", "family": "llama", "parameter_size": "3.2B"},
            }
            for name in self.models
        ]
        handler.send_body(200, _encode({"models": models}))

    def _message(self, content: str, calls: Sequence[Call] = ()) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if calls:
            message["tool_calls"] = [
                {
                    **({"id": call.id} if call.id else {}),
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in calls
            ]
        return message

    def _line(self, body: dict[str, Any], **fields: Any) -> dict[str, Any]:
        return {"model": body.get("model", ""), "created_at": "2025-01-01T00:00:00Z", **fields}

    def _final(self, reply: Reply, body: dict[str, Any], message: dict[str, Any]) -> bytes:
        return _encode(
            self._line(
                body,
                message=message,
                done=True,
                done_reason=reply.finish_reason or "stop",
                total_duration=1_000_000,
                prompt_eval_count=reply.prompt_tokens,
                eval_count=reply.output_tokens,
            )
        )

    def stream_frames(self, reply: Reply, body: dict[str, Any]) -> list[bytes]:
        frames = [
            _encode(self._line(body, message=self._message(piece), done=False)) + b"\n"
            for piece in reply.pieces
        ]
        if reply.tool_calls:  # whole, in a line of their own before the last
            message = self._message("", reply.tool_calls)
            frames.append(_encode(self._line(body, message=message, done=False)) + b"\n")
        frames.append(self._final(reply, body, self._message("")) + b"\n")
        return frames

    def whole(self, reply: Reply, body: dict[str, Any]) -> bytes:
        return self._final(reply, body, self._message(reply.text, reply.tool_calls))

    def error_body(self, status: int, message: str, code: str | None) -> bytes:
        return _encode({"error": message})

    def error_frame(self, message: str) -> bytes:
        return _encode({"error": message}) + b"\n"

    def missing_model(self, model: str) -> HTTPError:
        return HTTPError(404, f"model '{model}' not found")

    def malformed_frames(self, data: bytes) -> list[bytes]:
        return [data + b"\n"]


class FakeOpenAI(FakeModelServer):
    """OpenAI's Chat Completions: ``POST /v1/chat/completions`` (SSE), ``GET /v1/models``."""

    chat_path = "/v1/chat/completions"
    url_suffix = "/v1"
    stream_by_default = False
    stream_type = "text/event-stream"

    def __init__(
        self,
        *,
        models: Iterable[str] = ("gpt-4o-mini",),
        default: Entry | None = None,
        api_key: str | None = None,
        list_models: bool = True,
    ) -> None:
        super().__init__(models=models, default=default)
        self.api_key = api_key
        self.list_models = list_models
        self._ids = itertools.count(1)

    def authorized(self, handler: _Handler) -> bool:
        if self.api_key is None:
            return True
        given = handler.headers.get("Authorization", "")
        if given == f"Bearer {self.api_key}":
            return True
        message = (
            "You didn't provide an API key."
            if not given
            else "Incorrect API key provided. You can find your API key in your account settings."
        )
        handler.send_body(401, self.error_body(401, message, "invalid_api_key"))
        return False

    def get(self, path: str, handler: _Handler) -> None:
        if path != "/v1/models" or not self.list_models:
            handler.send_body(404, self.error_body(404, f"Unknown path {path}", None))
            return
        data = [
            {"id": name, "object": "model", "created": 1700000000, "owned_by": "fake"}
            for name in self.models
        ]
        handler.send_body(200, _encode({"object": "list", "data": data}))

    def _call_id(self, call: Call) -> str:
        return call.id or f"call_fake{next(self._ids)}"

    def _chunk(self, body: dict[str, Any], choices: list[Any], **fields: Any) -> bytes:
        chunk = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body.get("model", ""),
            "choices": choices,
            **fields,
        }
        return b"data: " + _encode(chunk) + b"\n\n"

    def _usage(self, reply: Reply) -> dict[str, int]:
        out = reply.output_tokens
        return {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": out,
            "total_tokens": reply.prompt_tokens + out,
        }

    def _reason(self, reply: Reply) -> str:
        return reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")

    def stream_frames(self, reply: Reply, body: dict[str, Any]) -> list[bytes]:
        def delta(content: dict[str, Any], reason: str | None = None) -> bytes:
            return self._chunk(body, [{"index": 0, "delta": content, "finish_reason": reason}])

        frames = [delta({"role": "assistant", "content": ""})]
        frames += [delta({"content": piece}) for piece in reply.pieces]
        for index, call in enumerate(reply.tool_calls):
            arguments = (
                call.arguments
                if isinstance(call.arguments, str)
                else _encode(call.arguments).decode()
            )
            first = {
                "index": index,
                "id": self._call_id(call),
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            frames.append(delta({"tool_calls": [first]}))
            size = max(1, -(-len(arguments) // max(1, reply.fragments)))
            for start in range(0, len(arguments), size):
                part = {"index": index, "function": {"arguments": arguments[start : start + size]}}
                frames.append(delta({"tool_calls": [part]}))
        frames.append(delta({}, self._reason(reply)))
        if (body.get("stream_options") or {}).get("include_usage"):
            frames.append(self._chunk(body, [], usage=self._usage(reply)))
        frames.append(b"data: [DONE]\n\n")
        return frames

    def whole(self, reply: Reply, body: dict[str, Any]) -> bytes:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": reply.text or None,
            "refusal": None,
        }
        if reply.tool_calls:
            message["tool_calls"] = [
                {
                    "id": self._call_id(call),
                    "type": "function",
                    "function": {
                        "name": call.name,
                        "arguments": call.arguments
                        if isinstance(call.arguments, str)
                        else _encode(call.arguments).decode(),
                    },
                }
                for call in reply.tool_calls
            ]
        return _encode(
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", ""),
                "choices": [{"index": 0, "message": message, "finish_reason": self._reason(reply)}],
                "usage": self._usage(reply),
            }
        )

    def error_body(self, status: int, message: str, code: str | None) -> bytes:
        kind = "invalid_request_error" if status < 500 else "server_error"
        if status == 429:
            kind = "rate_limit_exceeded" if code is None else code
        error = {"message": message, "type": kind, "param": None, "code": code}
        return _encode({"error": error})

    def error_frame(self, message: str) -> bytes:
        error = {"message": message, "type": "server_error", "param": None, "code": None}
        return b"data: " + _encode({"error": error}) + b"\n\n"

    def missing_model(self, model: str) -> HTTPError:
        return HTTPError(
            404,
            f"The model `{model}` does not exist or you do not have access to it.",
            code="model_not_found",
        )

    def malformed_frames(self, data: bytes) -> list[bytes]:
        return [b"data: " + data + b"\n\n"]


class _HTTPServer(ThreadingHTTPServer):
    """Joins its handler threads on close, and can drop their connections first."""

    daemon_threads = False  # server_close() joins them: nothing outlives the fake
    block_on_close = True

    def __init__(self, fake: FakeModelServer) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._dropping = False

    def track(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.add(connection)
            if self._dropping:
                _drop(connection)

    def untrack(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.discard(connection)

    def drop_connections(self) -> None:
        """End idle keep-alive connections, so their threads can be joined."""
        with self._lock:
            self._dropping = True
            for connection in self._connections:
                _drop(connection)

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if error is not None and not isinstance(error, ConnectionError):
            self.fake.errors.append(error)


def _drop(connection: socket.socket) -> None:
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"  # keep-alive and chunked bodies, as the real servers
    timeout = 60  # a forgotten idle connection cannot pin a thread for ever

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        fake = self.server.fake
        fake._record(self._recorded(None))
        if fake.authorized(self):
            fake.get(self.path, self)

    def do_POST(self) -> None:
        fake = self.server.fake
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = msgspec.json.decode(raw) if raw else None
        except msgspec.DecodeError:
            body = None
        number = fake._record(self._recorded(body))
        if not fake.authorized(self):
            return
        if self.path != fake.chat_path:
            fake.get(self.path, self)  # the same 404 a GET gets
            return
        try:
            fake.answer_chat(self, body, number)
        except ConnectionError:
            self.close_connection = True  # the client gave up; nobody to answer

    def _recorded(self, body: Any) -> Recorded:
        headers = {name.lower(): value for name, value in self.headers.items()}
        return Recorded(method=self.command, path=self.path, headers=headers, body=body)

    def send_body(
        self,
        status: int,
        data: bytes,
        content_type: str = "application/json; charset=utf-8",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def send_cut(self, data: bytes) -> None:
        """Promise the whole body, send half, and drop the connection."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.close_connection = True

    def send_stream(self, content_type: str, frames: Sequence[bytes], *, end: bool = True) -> None:
        """A chunked body, one chunk per frame; without ``end``, cut before the last chunk."""
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        if content_type == "text/event-stream":
            self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        for frame in frames:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(frame), frame))
            self.wfile.flush()
        if end:
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.close_connection = True
