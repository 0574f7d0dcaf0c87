"""The OpenAI-compatible provider against a real local chat completions server."""

from __future__ import annotations

import json
import math
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.servers.openai_compat import DEFAULT_ASSESSMENT, OpenAICompatServer
from webapp.integrations.ai import (
    AiPermanent,
    AiRetryable,
    AssessmentProvider,
    HeuristicProvider,
    OpenAICompatProvider,
    build_provider,
)

API_KEY = "sk-test-5f2c9a71d04e4b1f"
MODEL = "gpt-4o-mini"

CASE = {
    "title": "Can't reach the file server by name",
    "client_name": "Acme Dental",
    "note": "Rebooted fs01 and flushed DNS on two clients; still failing. Need a DNS person.",
    "urgency": "high",
    "problem": "Users at the Leeds office can't open \\\\fs01\\shared since 8am.",
    "messages": [
        {
            "role": "engineer",
            "content": "nslookup fs01 gives Non-existent domain from 192.168.1.1",
            "created_at": "2024-05-01T09:00:00Z",
        },
        {
            "role": "assistant",
            "content": "The clients may be using the router for DNS; check DHCP option 6.",
            "created_at": "2024-05-01T09:01:00Z",
        },
    ],
}


@pytest.fixture
def server() -> Iterator[OpenAICompatServer]:
    """A local OpenAI-compatible server that knows one model and one key."""
    with OpenAICompatServer(api_key=API_KEY, models={MODEL}) as running:
        yield running


def provider_for(
    server: OpenAICompatServer,
    *,
    api_key: str | None = API_KEY,
    model: str = MODEL,
    timeout: float = 5.0,
) -> AssessmentProvider:
    return build_provider(
        "openai", base_url=server.url, api_key=api_key, model=model, timeout=timeout,
        allow_private=True,   # the test's server is on loopback
    )


def test_a_good_answer_becomes_an_assessment() -> None:
    with OpenAICompatServer(
        api_key=API_KEY, models={MODEL}, answer_model="gpt-4o-mini-2024-07-18"
    ) as server:
        result = provider_for(server).assess(CASE)

    assert result.summary == DEFAULT_ASSESSMENT["summary"]
    assert result.likely_causes == DEFAULT_ASSESSMENT["likely_causes"]
    assert result.next_steps == DEFAULT_ASSESSMENT["next_steps"]
    assert result.confidence == pytest.approx(0.72)
    assert result.provider == "openai"
    # The answer names the exact model snapshot that wrote it.
    assert result.model == "gpt-4o-mini-2024-07-18"


def test_the_request_carries_model_key_json_mode_and_the_case(
    server: OpenAICompatServer,
) -> None:
    provider_for(server).assess(CASE)

    [request] = server.requests
    assert request.method == "POST"
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    body = request.body
    assert body["model"] == MODEL
    assert body["temperature"] == 0.2
    assert body["response_format"] == {"type": "json_object"}
    system, user = body["messages"]
    assert system["role"] == "system"
    for key in ("summary", "likely_causes", "next_steps", "confidence"):
        assert key in system["content"]
    assert user["role"] == "user"
    for text in (
        "Client: Acme Dental",
        "Urgency: high",
        "Can't reach the file server by name",
        "Users at the Leeds office can't open \\\\fs01\\shared since 8am.",
        "Rebooted fs01 and flushed DNS on two clients",
        "[2024-05-01T09:00:00Z engineer] nslookup fs01 gives Non-existent domain",
        "[2024-05-01T09:01:00Z assistant] The clients may be using the router",
    ):
        assert text in user["content"]


def test_without_a_key_no_authorization_header_is_sent() -> None:
    with OpenAICompatServer(api_key=None) as server:
        result = provider_for(server, api_key=None).assess(CASE)

    assert result.summary == DEFAULT_ASSESSMENT["summary"]
    assert "authorization" not in server.requests[0].headers


def test_the_answer_model_falls_back_to_the_configured_one(server: OpenAICompatServer) -> None:
    assert provider_for(server).assess(CASE).model == MODEL


def test_a_fenced_answer_is_accepted(server: OpenAICompatServer) -> None:
    server.answer_next("```json\n" + json.dumps(DEFAULT_ASSESSMENT, indent=2) + "\n```")

    result = provider_for(server).assess(CASE)

    assert result.summary == DEFAULT_ASSESSMENT["summary"]


def test_confidence_is_clamped_and_lists_are_capped(server: OpenAICompatServer) -> None:
    too_much = dict(
        DEFAULT_ASSESSMENT,
        confidence=1.7,
        likely_causes=[f"Cause {n}." for n in range(12)],
        next_steps=["  Check the thing.  "],
    )
    server.answer_next(too_much)
    server.answer_next(dict(DEFAULT_ASSESSMENT, confidence=-0.3))
    provider = provider_for(server)

    first = provider.assess(CASE)
    second = provider.assess(CASE)

    assert first.confidence == 1.0
    assert first.likely_causes == [f"Cause {n}." for n in range(8)]
    assert first.next_steps == ["Check the thing."]
    assert second.confidence == 0.0


def test_a_timeout_is_retryable(server: OpenAICompatServer) -> None:
    server.delay_next(3)
    started = time.perf_counter()

    with pytest.raises(AiRetryable) as caught:
        provider_for(server, timeout=0.3).assess(CASE)

    assert time.perf_counter() - started < 2
    assert "no complete answer within 0.3s" in caught.value.reason


def test_a_server_that_is_down_is_retryable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = build_provider("openai", base_url=f"http://127.0.0.1:{port}/v1", model=MODEL,
                              allow_private=True)

    with pytest.raises(AiRetryable) as caught:
        provider.assess(CASE)

    assert "cannot connect" in caught.value.reason


def test_a_dropped_connection_is_retryable(server: OpenAICompatServer) -> None:
    server.drop_next()

    with pytest.raises(AiRetryable) as caught:
        provider_for(server).assess(CASE)

    assert "no answer" in caught.value.reason


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_retryable(server: OpenAICompatServer, status: int) -> None:
    server.fail_next(status)

    with pytest.raises(AiRetryable) as caught:
        provider_for(server).assess(CASE)

    assert f"({status})" in caught.value.reason


def test_503_then_success_on_the_next_attempt(server: OpenAICompatServer) -> None:
    server.fail_next(503)
    provider = provider_for(server)

    with pytest.raises(AiRetryable):
        provider.assess(CASE)
    assert provider.assess(CASE).summary == DEFAULT_ASSESSMENT["summary"]
    assert len(server.requests) == 2


def test_rate_limit_is_retryable_with_the_servers_retry_after(
    server: OpenAICompatServer,
) -> None:
    server.fail_next(429, retry_after=7)

    with pytest.raises(AiRetryable) as caught:
        provider_for(server).assess(CASE)

    assert caught.value.retry_after == 7.0
    assert "rate limited (429)" in caught.value.reason


def test_an_exhausted_quota_is_permanent(server: OpenAICompatServer) -> None:
    server.fail_next(
        429,
        error={
            "message": "You exceeded your current quota.",
            "type": "insufficient_quota",
            "code": "insufficient_quota",
        },
    )

    with pytest.raises(AiPermanent) as caught:
        provider_for(server).assess(CASE)

    assert "quota" in caught.value.reason


def test_an_answer_that_is_not_json_is_permanent(server: OpenAICompatServer) -> None:
    server.invalid_json_next()

    with pytest.raises(AiPermanent) as caught:
        provider_for(server).assess(CASE)

    assert "invalid assessment JSON" in caught.value.reason


def test_an_answer_cut_off_at_the_length_limit_says_so(server: OpenAICompatServer) -> None:
    server.answer_next('{"summary": "DNS is', finish_reason="length")

    with pytest.raises(AiPermanent) as caught:
        provider_for(server).assess(CASE)

    assert "invalid assessment JSON" in caught.value.reason
    assert "cut off" in caught.value.reason


def test_the_servers_wrong_shape_answer_is_permanent(server: OpenAICompatServer) -> None:
    server.wrong_shape_next()

    with pytest.raises(AiPermanent) as caught:
        provider_for(server).assess(CASE)

    assert "invalid assessment JSON" in caught.value.reason


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        ([DEFAULT_ASSESSMENT], "expected an object"),
        ({k: v for k, v in DEFAULT_ASSESSMENT.items() if k != "summary"}, "summary"),
        (dict(DEFAULT_ASSESSMENT, summary="   "), "summary"),
        (dict(DEFAULT_ASSESSMENT, likely_causes="DNS"), "likely_causes"),
        (dict(DEFAULT_ASSESSMENT, likely_causes=[]), "likely_causes"),
        (dict(DEFAULT_ASSESSMENT, next_steps=["Check DNS.", ""]), "next_steps"),
        (dict(DEFAULT_ASSESSMENT, next_steps=["Check DNS.", 2]), "next_steps"),
        (dict(DEFAULT_ASSESSMENT, confidence="0.8"), "confidence"),
        (dict(DEFAULT_ASSESSMENT, confidence=True), "confidence"),
        (dict(DEFAULT_ASSESSMENT, confidence=None), "confidence"),
        (dict(DEFAULT_ASSESSMENT, confidence=math.nan), "confidence"),
    ],
)
def test_wrong_shapes_are_permanent_and_named(
    server: OpenAICompatServer, content: object, complaint: str
) -> None:
    server.answer_next(json.dumps(content))

    with pytest.raises(AiPermanent) as caught:
        provider_for(server).assess(CASE)

    assert caught.value.reason.startswith("invalid assessment JSON")
    assert complaint in caught.value.reason


def test_a_rejected_key_is_permanent_and_never_shown(server: OpenAICompatServer) -> None:
    wrong_key = "sk-live-0123456789abcdef"

    with pytest.raises(AiPermanent) as caught:
        provider_for(server, api_key=wrong_key).assess(CASE)

    assert "(401)" in caught.value.reason
    # The server echoed the key in its error message; the reason must not.
    assert wrong_key in json.dumps(server.requests[0].headers)
    for text in (caught.value.reason, str(caught.value), repr(caught.value)):
        assert wrong_key not in text


def test_an_injected_401_hides_the_configured_key(server: OpenAICompatServer) -> None:
    server.fail_next(401)

    with pytest.raises(AiPermanent) as caught:
        provider_for(server).assess(CASE)

    assert "API key rejected (401)" in caught.value.reason
    assert API_KEY not in caught.value.reason


def test_403_is_permanent(server: OpenAICompatServer) -> None:
    server.fail_next(403)

    with pytest.raises(AiPermanent) as caught:
        provider_for(server).assess(CASE)

    assert "(403)" in caught.value.reason


def test_an_unknown_model_is_permanent_and_named(server: OpenAICompatServer) -> None:
    with pytest.raises(AiPermanent) as caught:
        provider_for(server, model="gpt-9-imaginary").assess(CASE)

    assert "gpt-9-imaginary" in caught.value.reason
    assert "(404)" in caught.value.reason


def test_a_bad_request_is_permanent_with_the_servers_message(
    server: OpenAICompatServer,
) -> None:
    server.fail_next(
        400,
        error={
            "message": "This model's maximum context length is 8192 tokens.",
            "type": "invalid_request_error",
            "code": "context_length_exceeded",
        },
    )

    with pytest.raises(AiPermanent) as caught:
        provider_for(server).assess(CASE)

    assert "(400)" in caught.value.reason
    assert "maximum context length" in caught.value.reason


def test_a_long_transcript_is_cut_to_its_recent_part(server: OpenAICompatServer) -> None:
    messages = [
        {
            "role": "engineer" if n % 2 else "assistant",
            "content": f"message-{n:03d} " + "x" * 600,
            "created_at": "",
        }
        for n in range(200)
    ]
    case = dict(CASE, messages=messages, problem="p" * 50_000, note="n" * 10_000)

    provider_for(server).assess(case)

    text = server.requests[0].user_text
    assert "message-199" in text
    assert "message-150" not in text
    assert "message-000" not in text
    assert "of 200 messages" in text
    assert len(text) < 25_000


def test_a_supplied_http_client_is_used(server: OpenAICompatServer) -> None:
    sent: list[str] = []

    def remember(request: httpx.Request) -> None:
        sent.append(str(request.url))

    with httpx.Client(event_hooks={"request": [remember]}) as http:
        provider = build_provider(
            "openai", base_url=server.url + "/", api_key=API_KEY, model=MODEL, http=http
        )
        provider.assess(CASE)

    assert sent == [f"{server.url}/chat/completions"]


def test_build_provider_makes_an_openai_provider() -> None:
    provider = build_provider("OpenAI", base_url="http://127.0.0.1:9/v1", model=MODEL)

    assert isinstance(provider, OpenAICompatProvider)
    assert provider.name == "openai"
    assert isinstance(build_provider("heuristic"), HeuristicProvider)


@pytest.mark.parametrize(
    ("name", "settings", "complaint"),
    [
        ("claude-local", {}, "unknown AI provider 'claude-local'"),
        ("openai", {"model": MODEL}, "AI_BASE_URL"),
        ("openai", {"base_url": "  ", "model": MODEL}, "AI_BASE_URL"),
        ("openai", {"base_url": "ftp://models.example/v1", "model": MODEL}, "AI_BASE_URL"),
        ("openai", {"base_url": "http://127.0.0.1:9/v1"}, "AI_MODEL"),
        ("openai", {"base_url": "http://127.0.0.1:9/v1", "model": ""}, "AI_MODEL"),
    ],
)
def test_build_provider_refuses_bad_configuration(
    name: str, settings: dict, complaint: str
) -> None:
    with pytest.raises(AiPermanent) as caught:
        build_provider(name, api_key="sk-config-secret-42", **settings)

    assert complaint in caught.value.reason
    assert "sk-config-secret-42" not in caught.value.reason
