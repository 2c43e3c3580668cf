"""The Ollama and OpenAI clients over real HTTP, against fake servers of each wire format.

Every failure a model server can show — refused connection, 429, 5xx, a
missing model, a malformed, truncated or hung answer — must come out as the
fitting ``ModelError``, quickly, with nothing left open.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

import pytest
from llm_servers import (
    Call,
    FakeModelServer,
    FakeOllama,
    FakeOpenAI,
    Hang,
    HTTPError,
    Malformed,
    ModelMissing,
    Reply,
    StreamError,
    Truncated,
    closed_port_url,
)

from actors.llm.models import (
    ChatMessage,
    ChatModel,
    ModelError,
    ModelNotFound,
    ModelRateLimited,
    ModelResponseError,
    ModelSettings,
    ModelUnavailable,
    ToolCall,
    ToolSpec,
    create_model,
)
from actors.llm.models._ollama import OllamaModel
from actors.llm.models._openai import OpenAIModel

pytestmark = pytest.mark.anyio

MATH = ToolSpec(
    name="math",
    description="Evaluate an arithmetic expression.",
    parameters={
        "type": "object",
        "properties": {"expression": {"type": "string"}},
        "required": ["expression"],
    },
)
SCHEMA = {"type": "object", "properties": {"value": {"type": "integer"}}, "required": ["value"]}
QUESTION = [ChatMessage.user("What is 6*7?")]


@dataclass(frozen=True)
class Provider:
    name: Literal["ollama", "openai"]
    model: str
    fake: Callable[..., FakeModelServer]


OLLAMA = Provider("ollama", "llama3.2", FakeOllama)
OPENAI = Provider("openai", "gpt-4o-mini", FakeOpenAI)


@pytest.fixture(params=[OLLAMA, OPENAI], ids=lambda p: p.name)
def provider(request: pytest.FixtureRequest) -> Provider:
    chosen: Provider = request.param
    return chosen


@pytest.fixture
def server(provider: Provider) -> Iterator[FakeModelServer]:
    with provider.fake() as fake:
        yield fake
    assert fake.errors == []


def settings(provider: Provider, url: str, **fields: Any) -> ModelSettings:
    fields.setdefault("model", provider.model)
    fields.setdefault("retry_backoff", 0.01)
    return ModelSettings(provider=provider.name, base_url=url, **fields)


@asynccontextmanager
async def client(provider: Provider, url: str, **fields: Any) -> AsyncIterator[ChatModel]:
    model = create_model(settings(provider, url, **fields), environ={})
    try:
        yield model
    finally:
        await model.aclose()


class Tokens:
    """An ``on_token`` sink that keeps the pieces in order."""

    def __init__(self) -> None:
        self.pieces: list[str] = []

    async def __call__(self, piece: str) -> None:
        self.pieces.append(piece)


# -- answers -------------------------------------------------------------------------


async def test_a_whole_text_answer(provider: Provider, server: FakeModelServer) -> None:
    server.script(Reply("The answer is 42.", prompt_tokens=20, completion_tokens=6))
    async with client(provider, server.url, stream=False) as model:
        reply = await model.chat(QUESTION)
    assert reply.message == ChatMessage.assistant("The answer is 42.")
    assert (reply.model, reply.finish_reason) == (provider.model, "stop")
    assert (reply.prompt_tokens, reply.completion_tokens) == (20, 6)
    assert server.chat_requests[0].body["stream"] is False
    assert model.name == f"{provider.name}:{provider.model}"


async def test_a_streamed_answer_reaches_on_token_piece_by_piece(
    provider: Provider, server: FakeModelServer
) -> None:
    server.script(Reply("The answer is 42.", chunks=["The ans", "wer is", " 42", "."]))
    tokens = Tokens()
    async with client(provider, server.url) as model:
        reply = await model.chat(QUESTION, on_token=tokens)
    assert tokens.pieces == ["The ans", "wer is", " 42", "."]
    assert reply.message.content == "The answer is 42."
    assert reply.finish_reason == "stop"
    assert (reply.prompt_tokens, reply.completion_tokens) == (12, 4)


async def test_stream_setting_is_honoured_without_on_token(
    provider: Provider, server: FakeModelServer
) -> None:
    server.script("streamed anyway")
    async with client(provider, server.url, stream=True) as model:
        reply = await model.chat(QUESTION)
    assert reply.message.content == "streamed anyway"
    assert server.chat_requests[0].body["stream"] is True


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_tool_calls_come_back_decoded(
    provider: Provider, server: FakeModelServer, stream: bool
) -> None:
    server.script(
        Reply(
            "Let me compute.",
            tool_calls=[
                Call("math", {"expression": "6*7"}),
                Call("math", {"expression": "(1+2)*3", "note": "a longer argument string"}),
            ],
            fragments=5,
        )
    )
    async with client(provider, server.url, stream=stream) as model:
        reply = await model.chat(QUESTION, tools=[MATH])
    calls = reply.message.tool_calls
    assert [(c.name, c.arguments) for c in calls] == [
        ("math", {"expression": "6*7"}),
        ("math", {"expression": "(1+2)*3", "note": "a longer argument string"}),
    ]
    assert len({c.id for c in calls}) == 2 and all(c.id for c in calls)
    assert reply.message.content == "Let me compute."
    assert reply.finish_reason == "tool_calls"


async def test_an_empty_answer_is_still_an_answer(
    provider: Provider, server: FakeModelServer
) -> None:
    server.script(Reply(""), Reply(""))
    async with client(provider, server.url, stream=True) as model:
        assert (await model.chat(QUESTION)).message == ChatMessage.assistant("")
    async with client(provider, server.url, stream=False) as model:
        assert (await model.chat(QUESTION)).message == ChatMessage.assistant("")


async def test_a_script_may_answer_from_the_conversation(
    provider: Provider, server: FakeModelServer
) -> None:
    def echo_tool_result(body: dict[str, Any]) -> Reply:
        return Reply(f"the tool said {body['messages'][-1]['content']}")

    server.script(Reply(tool_calls=[Call("math", {"expression": "6*7"})]), echo_tool_result)
    async with client(provider, server.url) as model:
        first = await model.chat(QUESTION, tools=[MATH])
        (call,) = first.message.tool_calls
        conversation = [*QUESTION, first.message, ChatMessage.tool(call, '{"value": 42}')]
        second = await model.chat(conversation, tools=[MATH])
    assert second.message.content == 'the tool said {"value": 42}'


# -- what the servers receive ------------------------------------------------------------

ASKED = ToolCall(id="call_9", name="math", arguments={"expression": "6*7"})
CONVERSATION = [
    ChatMessage.system("You are terse."),
    ChatMessage.user("What is 6*7?"),
    ChatMessage.assistant(
        "", [ToolCall(id="call_9", name="math", arguments={"expression": "6*7"})]
    ),
    ChatMessage.tool(ToolCall(id="call_9", name="math"), '{"value": 42}'),
]


async def test_ollama_request_shape() -> None:
    with FakeOllama() as server:
        server.script("42")
        fields = {"temperature": 0.2, "max_tokens": 64, "options": {"num_ctx": 8192}}
        async with client(OLLAMA, server.url, stream=False, **fields) as model:
            await model.chat(CONVERSATION, tools=[MATH], output_schema=SCHEMA)
        (request,) = server.chat_requests
    assert request.method == "POST"
    assert request.body == {
        "model": "llama3.2",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "What is 6*7?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"function": {"name": "math", "arguments": {"expression": "6*7"}}}],
            },
            {"role": "tool", "content": '{"value": 42}', "tool_name": "math"},
        ],
        "stream": False,
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "math",
                    "description": MATH.description,
                    "parameters": MATH.parameters,
                },
            }
        ],
        "format": SCHEMA,
        "options": {"num_ctx": 8192, "temperature": 0.2, "num_predict": 64},
    }


async def test_openai_request_shape() -> None:
    with FakeOpenAI() as server:
        server.script("42", "42")
        fields = {"temperature": 0.2, "max_tokens": 64, "options": {"seed": 7, "model": "no"}}
        async with client(OPENAI, server.url, stream=False, **fields) as model:
            await model.chat(CONVERSATION, tools=[MATH], output_schema=SCHEMA)
        async with client(OPENAI, server.url, stream=True) as model:
            await model.chat(QUESTION)
        whole, streamed = server.chat_requests
    assert whole.body == {
        "seed": 7,
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "What is 6*7?"},
            {  # no "content" key: llama-cpp-python's server rejects a null one
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": "call_9",
                        "type": "function",
                        "function": {"name": "math", "arguments": '{"expression":"6*7"}'},
                    }
                ],
            },
            {"role": "tool", "content": '{"value": 42}', "tool_call_id": "call_9"},
        ],
        "stream": False,
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "math",
                    "description": MATH.description,
                    "parameters": MATH.parameters,
                },
            }
        ],
        "temperature": 0.2,
        "max_tokens": 64,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": SCHEMA, "strict": False},
        },
    }
    assert "authorization" not in whole.headers
    assert streamed.body["stream_options"] == {"include_usage": True}
    assert streamed.headers["accept"] == "text/event-stream"


async def test_openai_sends_the_key_from_the_environment() -> None:
    with FakeOpenAI(api_key="sk-test-123") as server:
        server.script("hello")
        resolved = settings(OPENAI, server.url).resolved(environ={"OPENAI_API_KEY": "sk-test-123"})
        model = OpenAIModel(resolved)
        try:
            assert (await model.chat(QUESTION)).message.content == "hello"
        finally:
            await model.aclose()
        assert server.chat_requests[0].headers["authorization"] == "Bearer sk-test-123"
        assert "sk-test-123" not in repr(resolved)


async def test_openai_model_not_found_as_a_400_is_model_not_found() -> None:
    """llama-cpp-python's server says model_not_found with a 400, not OpenAI's 404."""
    with FakeOpenAI() as server:
        server.script(HTTPError(400, "The model 'x' does not exist", code="model_not_found"))
        model = OpenAIModel(settings(OPENAI, server.url).resolved(environ={}))
        try:
            with pytest.raises(ModelNotFound, match="does not serve the model"):
                await model.chat(QUESTION)
        finally:
            await model.aclose()
        assert len(server.chat_requests) == 1  # not retried


@pytest.mark.parametrize(
    ("environ", "fragment"),
    [({}, "wants an API key"), ({"OPENAI_API_KEY": "sk-wrong"}, "refused the API key")],
)
async def test_openai_without_a_valid_key_says_to_set_it(
    environ: dict[str, str], fragment: str
) -> None:
    with FakeOpenAI(api_key="sk-right") as server:
        resolved = settings(OPENAI, server.url).resolved(environ=environ)
        model = OpenAIModel(resolved)
        try:
            with pytest.raises(ModelError, match=f"{fragment}.*set OPENAI_API_KEY") as info:
                await model.chat(QUESTION)
        finally:
            await model.aclose()
        assert type(info.value) is ModelError and info.value.code == 502
        assert len(server.chat_requests) == 1  # a 401 is not retried


async def test_openai_tool_call_deltas_are_assembled_by_index() -> None:
    with FakeOpenAI() as server:
        arguments = {"expression": "1+2+3+4+5+6+7+8+9", "precision": 3}
        server.script(
            Reply(
                "Computing",
                chunks=["Comp", "uting"],
                tool_calls=[Call("math", arguments, id="call_a"), Call("lookup", {"q": "x"})],
                fragments=7,
            )
        )
        tokens = Tokens()
        async with client(OPENAI, server.url) as model:
            reply = await model.chat(QUESTION, tools=[MATH], on_token=tokens)
    assert tokens.pieces == ["Comp", "uting"]
    first, second = reply.message.tool_calls
    assert first == ToolCall(id="call_a", name="math", arguments=arguments)
    assert (second.name, second.arguments) == ("lookup", {"q": "x"})
    assert second.id.startswith("call_")


async def test_openai_stream_may_end_after_finish_reason_without_done() -> None:
    with FakeOpenAI() as server:
        # frames: role, "ok", finish_reason, usage, [DONE]: stop cleanly after the third
        server.script(Truncated("ok", after=3, abort=False))
        async with client(OPENAI, server.url) as model:
            reply = await model.chat(QUESTION)
    assert (reply.message.content, reply.finish_reason) == ("ok", "stop")
    assert reply.prompt_tokens is None


async def test_ollama_accepts_arguments_as_a_json_string() -> None:
    with FakeOllama() as server:
        server.script(Reply(tool_calls=[Call("math", '{"expression": "1+1"}', id="abc")]))
        async with client(OLLAMA, server.url) as model:
            reply = await model.chat(QUESTION, tools=[MATH])
    assert reply.message.tool_calls == (
        ToolCall(id="abc", name="math", arguments={"expression": "1+1"}),
    )


# -- check() -----------------------------------------------------------------------------


async def test_check_passes_when_the_model_is_there(
    provider: Provider, server: FakeModelServer
) -> None:
    async with client(provider, server.url) as model:
        await model.check()
    assert server.requests[0].method == "GET"


async def test_check_names_the_missing_model(provider: Provider) -> None:
    with provider.fake(models=["something-else"]) as server:
        async with client(provider, server.url) as model:
            with pytest.raises(ModelNotFound, match=provider.model) as info:
                await model.check()
    if provider is OLLAMA:
        assert "`ollama pull llama3.2`" in str(info.value)
    assert info.value.code == 503


async def test_ollama_check_accepts_the_latest_tag() -> None:
    with FakeOllama(models=["llama3.2:latest", "qwen3:8b"]) as server:
        for name in ("llama3.2", "llama3.2:latest", "qwen3:8b"):
            async with client(OLLAMA, f"{server.url}/", model=name) as model:
                await model.check()


async def test_openai_check_accepts_a_server_without_a_model_list() -> None:
    with FakeOpenAI(list_models=False) as server:
        async with client(OPENAI, server.url) as model:
            await model.check()


async def test_a_chat_for_a_model_not_served_is_model_not_found(
    provider: Provider, server: FakeModelServer
) -> None:
    server.script(ModelMissing())
    async with client(provider, server.url) as model:
        with pytest.raises(ModelNotFound, match=provider.model):
            await model.chat(QUESTION)
    assert len(server.chat_requests) == 1


# -- failures --------------------------------------------------------------------------------


async def test_an_unreachable_server_is_unavailable_at_once(provider: Provider) -> None:
    started = time.monotonic()
    async with client(provider, closed_port_url(), retries=2) as model:
        with pytest.raises(ModelUnavailable, match="connection refused") as info:
            await model.chat(QUESTION)
    assert time.monotonic() - started < 5
    assert "gave up after 3 attempts" in str(info.value)
    if provider is OLLAMA:
        assert "is `ollama serve` running?" in str(info.value)
    assert info.value.code == 503


async def test_a_429_is_retried_until_it_passes(
    provider: Provider, server: FakeModelServer
) -> None:
    server.script(HTTPError(429, "slow down", retry_after=0), "made it")
    async with client(provider, server.url, retries=2) as model:
        reply = await model.chat(QUESTION)
    assert reply.message.content == "made it"
    assert len(server.chat_requests) == 2


async def test_a_persistent_429_is_rate_limited(
    provider: Provider, server: FakeModelServer
) -> None:
    server.script(*[HTTPError(429, "slow down", retry_after=0)] * 2)
    async with client(provider, server.url, retries=1) as model:
        with pytest.raises(ModelRateLimited, match="HTTP 429: slow down") as info:
            await model.chat(QUESTION)
    assert info.value.retry_after == 0
    assert len(server.chat_requests) == 2


async def test_a_retry_after_beyond_reason_is_not_waited_for(
    provider: Provider, server: FakeModelServer
) -> None:
    server.script(HTTPError(429, retry_after=3600))
    async with client(provider, server.url, retries=3) as model:
        with pytest.raises(ModelRateLimited) as info:
            await model.chat(QUESTION)
    assert info.value.retry_after == 3600
    assert len(server.chat_requests) == 1


async def test_a_5xx_is_unavailable_after_every_retry(
    provider: Provider, server: FakeModelServer
) -> None:
    server.script(*[HTTPError(500, "out of memory")] * 3)
    async with client(provider, server.url, retries=2) as model:
        with pytest.raises(ModelUnavailable, match=r"HTTP 500.*out of memory"):
            await model.chat(QUESTION)
    assert len(server.chat_requests) == 3


async def test_other_4xx_are_not_retried(provider: Provider, server: FakeModelServer) -> None:
    server.script(HTTPError(400, "messages must not be empty"))
    async with client(provider, server.url, retries=3) as model:
        with pytest.raises(ModelError, match=r"HTTP 400.*messages must not be empty") as info:
            await model.chat(QUESTION)
    assert type(info.value) is ModelError
    assert len(server.chat_requests) == 1


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_malformed_json_is_a_response_error(
    provider: Provider, server: FakeModelServer, stream: bool
) -> None:
    server.script(Malformed())
    async with client(provider, server.url, stream=stream) as model:
        with pytest.raises(ModelResponseError, match="malformed"):
            await model.chat(QUESTION)


@pytest.mark.parametrize("abort", [True, False], ids=["dropped", "ended-early"])
async def test_a_truncated_stream_is_a_response_error(
    provider: Provider, server: FakeModelServer, abort: bool
) -> None:
    server.script(Truncated(Reply("one two three four"), after=2, abort=abort))
    tokens = Tokens()
    async with client(provider, server.url, retries=2) as model:
        with pytest.raises(ModelResponseError, match="truncated"):
            await model.chat(QUESTION, on_token=tokens)
    assert tokens.pieces  # it had started: the failure is final, not retried
    assert len(server.chat_requests) == 1


async def test_a_truncated_whole_answer_is_a_response_error(
    provider: Provider, server: FakeModelServer
) -> None:
    server.script(Truncated("a whole answer that is cut"))
    async with client(provider, server.url, stream=False, retries=2) as model:
        with pytest.raises(ModelResponseError, match="truncated"):
            await model.chat(QUESTION)
    assert len(server.chat_requests) == 1


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_a_hung_server_is_unavailable_after_the_timeout(
    provider: Provider, server: FakeModelServer, stream: bool
) -> None:
    server.script(Hang(), Hang())
    started = time.monotonic()
    async with client(provider, server.url, stream=stream, timeout=0.5, retries=1) as model:
        with pytest.raises(ModelUnavailable, match=r"sent nothing for 0.5 s"):
            await model.chat(QUESTION)
    assert time.monotonic() - started < 10
    assert len(server.chat_requests) == 2


async def test_a_stream_that_stalls_midway_is_unavailable(
    provider: Provider, server: FakeModelServer
) -> None:
    server.script(Hang(Reply("one two three"), after=2))
    tokens = Tokens()
    async with client(provider, server.url, timeout=0.5, retries=2) as model:
        with pytest.raises(ModelUnavailable, match="in the middle of the answer"):
            await model.chat(QUESTION, on_token=tokens)
    assert tokens.pieces
    assert len(server.chat_requests) == 1


async def test_an_error_in_the_stream_is_a_model_error(
    provider: Provider, server: FakeModelServer
) -> None:
    server.script(StreamError("the runner crashed", reply="partial answer", after=2))
    async with client(provider, server.url) as model:
        with pytest.raises(ModelError, match="failed mid-answer: the runner crashed"):
            await model.chat(QUESTION)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_tool_arguments_that_are_not_json_name_the_tool(
    provider: Provider, server: FakeModelServer, stream: bool
) -> None:
    server.script(Reply(tool_calls=[Call("math", '{"expression": "6*7"')]))
    async with client(provider, server.url, stream=stream) as model:
        with pytest.raises(ModelResponseError, match="called 'math' with arguments that are not"):
            await model.chat(QUESTION, tools=[MATH])


async def test_a_closed_client_refuses_and_closes_again_quietly(
    provider: Provider, server: FakeModelServer
) -> None:
    server.script("one")
    async with client(provider, server.url) as model:
        await model.chat(QUESTION)
        await model.aclose()
        await model.aclose()
        with pytest.raises(ModelError, match="is closed"):
            await model.chat(QUESTION)


def test_create_model_builds_the_right_client() -> None:
    ollama = create_model(ModelSettings(model="llama3.2"), environ={"OLLAMA_HOST": "gpu:9999"})
    openai = create_model(ModelSettings(model="gpt-4o-mini", provider="openai"), environ={})
    assert isinstance(ollama, OllamaModel) and ollama.settings.base_url == "http://gpu:9999"
    assert isinstance(openai, OpenAIModel) and openai.name == "openai:gpt-4o-mini"


@pytest.mark.parametrize(
    ("style", "expected"),
    [
        ("json_object", {"type": "json_object", "schema": SCHEMA}),  # llama-cpp-python
        ("off", None),
    ],
)
async def test_openai_structured_output_styles(style: str, expected: Any) -> None:
    with FakeOpenAI() as server:
        server.script('{"value": 42}')
        async with client(OPENAI, server.url, structured_output=style, stream=False) as model:
            reply = await model.chat(QUESTION, output_schema=SCHEMA)
        assert reply.message.content == '{"value": 42}'
        assert server.chat_requests[0].body.get("response_format") == expected
