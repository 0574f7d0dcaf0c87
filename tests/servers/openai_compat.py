"""A local OpenAI-compatible chat completions server with fault injection, for tests."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEFAULT_ASSESSMENT: dict[str, Any] = {
    "summary": (
        "Acme Dental cannot resolve the file server by name since this morning; the engineer "
        "rebooted the server and flushed DNS. Urgency is high."
    ),
    "likely_causes": [
        "Clients received the router as DNS server from DHCP instead of the domain controller.",
        "The file server's A record was scavenged from the internal zone.",
    ],
    "next_steps": [
        "Run ipconfig /all on an affected PC and check the DNS servers.",
        "Check DHCP option 6 on the scope.",
        "Look up fs01 in the DNS console and re-register it with ipconfig /registerdns.",
    ],
    "confidence": 0.72,
}

# Error bodies in OpenAI's shape, per injected status.
_ERRORS: dict[int, dict[str, Any]] = {
    400: {"message": "Invalid request.", "type": "invalid_request_error", "code": None},
    403: {
        "message": "Project does not have access to this model.",
        "type": "invalid_request_error",
        "code": "model_not_allowed",
    },
    404: {"message": "Not found.", "type": "invalid_request_error", "code": "not_found"},
    429: {
        "message": "Rate limit reached for requests per min. Please try again later.",
        "type": "requests",
        "code": "rate_limit_exceeded",
    },
    500: {
        "message": "The server had an error while processing your request.",
        "type": "server_error",
    },
    502: {"message": "Bad gateway.", "type": "server_error"},
    503: {
        "message": "The engine is currently overloaded, please try again later.",
        "type": "server_error",
    },
}

_ROLES = {"system", "developer", "user", "assistant", "tool"}


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: Any  # the parsed JSON body, or None when it did not parse

    @property
    def user_text(self) -> str:
        """The content of the request's user messages, joined."""
        messages = self.body.get("messages", []) if isinstance(self.body, dict) else []
        return "\n".join(
            m["content"]
            for m in messages
            if isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), str)
        )


@dataclass
class _Fault:
    delay: float = 0.0
    status: int | None = None
    retry_after: str | None = None
    error: dict[str, Any] | None = None
    content: str | None = None
    finish_reason: str = "stop"
    drop: bool = False


@dataclass
class _State:
    api_key: str | None
    models: set[str] | None
    answer_model: str | None
    assessment: dict[str, Any]
    faults: deque[_Fault] = field(default_factory=deque)
    requests: list[RecordedRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)
    served: int = 0


class OpenAICompatServer:
    """Serves POST /v1/chat/completions on 127.0.0.1; faults apply to the next requests."""

    def __init__(
        self,
        *,
        api_key: str | None = "test-key",
        models: set[str] | None = None,
        answer_model: str | None = None,
        assessment: dict[str, Any] | None = None,
    ) -> None:
        self._state = _State(
            api_key=api_key,
            models=set(models) if models is not None else None,
            answer_model=answer_model,
            assessment=dict(assessment or DEFAULT_ASSESSMENT),
        )
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # Lifecycle

    def start(self) -> OpenAICompatServer:
        """Listen on an ephemeral loopback port and serve in a background thread."""
        state = self._state

        class Handler(_Handler):
            pass

        Handler.state = state
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, cutting short any injected delay."""
        self._state.stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> OpenAICompatServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The port the server listens on."""
        if self._httpd is None:
            raise RuntimeError("the server is not running")
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        """The base URL a client is configured with, ending in /v1."""
        return f"http://127.0.0.1:{self.port}/v1"

    # What it answers

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, oldest first."""
        with self._state.lock:
            return list(self._state.requests)

    @property
    def assessment(self) -> dict[str, Any]:
        """The assessment JSON a normal answer carries as its content."""
        return self._state.assessment

    @assessment.setter
    def assessment(self, value: dict[str, Any]) -> None:
        self._state.assessment = dict(value)

    def delay_next(self, seconds: float, times: int = 1) -> None:
        """Hold the next answers for seconds before sending them (for client timeouts)."""
        self._push(times, delay=seconds)

    def fail_next(
        self,
        status: int,
        times: int = 1,
        *,
        retry_after: str | float | None = None,
        error: dict[str, Any] | None = None,
    ) -> None:
        """Answer the next requests with status and an OpenAI-shaped error body."""
        self._push(
            times,
            status=status,
            retry_after=None if retry_after is None else str(retry_after),
            error=error,
        )

    def answer_next(
        self, content: str | dict, times: int = 1, *, finish_reason: str = "stop"
    ) -> None:
        """Answer the next requests normally but with this message content."""
        text = content if isinstance(content, str) else json.dumps(content)
        self._push(times, content=text, finish_reason=finish_reason)

    def invalid_json_next(self, times: int = 1) -> None:
        """Answer the next requests with content that is not JSON."""
        self.answer_next("Sure! The most likely cause is DNS. {summary: DNS broken", times)

    def wrong_shape_next(self, times: int = 1) -> None:
        """Answer the next requests with JSON of the wrong shape."""
        self.answer_next(
            {"summary": "", "likely_causes": "DNS", "next_steps": [1, 2], "confidence": "high"},
            times,
        )

    def drop_next(self, times: int = 1) -> None:
        """Close the connection on the next requests without answering."""
        self._push(times, drop=True)

    def _push(self, times: int, **fault: Any) -> None:
        with self._state.lock:
            for _ in range(times):
                self._state.faults.append(_Fault(**fault))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: _State

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Keep test output quiet."""

    def do_GET(self) -> None:  # noqa: N802
        """Only POST is served; answer like OpenAI does for other methods."""
        self._discard_body()
        self._record(None)
        self._error(404, f"Unknown request URL: GET {self.path}.", code="unknown_url")

    def do_POST(self) -> None:  # noqa: N802
        """Answer a chat completion, or the next injected fault."""
        raw = self._read_body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        self._record(body)
        with self.state.lock:
            fault = self.state.faults.popleft() if self.state.faults else None
        fault = fault or _Fault()
        if fault.delay:
            self.state.stopping.wait(fault.delay)
        if fault.drop:
            self.close_connection = True
            return
        if fault.status is not None:
            self._injected_error(fault)
            return
        if self.path.split("?", 1)[0] != "/v1/chat/completions":
            self._error(404, f"Unknown request URL: POST {self.path}.", code="unknown_url")
            return
        if not self._authorised():
            return
        if body is None:
            self._error(400, "We could not parse the JSON body of your request.")
            return
        problem = _request_problem(body)
        if problem:
            self._error(400, problem)
            return
        if self.state.models is not None and body["model"] not in self.state.models:
            self._error(
                404,
                f"The model `{body['model']}` does not exist or you do not have access to it.",
                code="model_not_found",
            )
            return
        content = fault.content if fault.content is not None else json.dumps(self.state.assessment)
        self._completion(body, content, fault.finish_reason)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _discard_body(self) -> None:
        self._read_body()

    def _record(self, body: Any) -> None:
        headers = {name.lower(): value for name, value in self.headers.items()}
        request = RecordedRequest(self.command, self.path, headers, body)
        with self.state.lock:
            self.state.requests.append(request)

    def _authorised(self) -> bool:
        expected = self.state.api_key
        if expected is None:
            return True
        given = self.headers.get("Authorization", "")
        if not given:
            self._error(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            )
            return False
        if given != f"Bearer {expected}":
            # Echo the key back, as careless proxies do, so tests prove the client hides it.
            key = given.removeprefix("Bearer ")
            self._error(401, f"Incorrect API key provided: {key}.", code="invalid_api_key")
            return False
        return True

    def _injected_error(self, fault: _Fault) -> None:
        status = fault.status or 500
        error = fault.error
        if error is None and status == 401:
            given = self.headers.get("Authorization", "").removeprefix("Bearer ")
            error = {
                "message": f"Incorrect API key provided: {given}.",
                "type": "invalid_request_error",
                "code": "invalid_api_key",
            }
        if error is None:
            error = _ERRORS.get(status, {"message": f"Error {status}.", "type": "server_error"})
        headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
        self._send_json(status, {"error": error}, headers)

    def _error(self, status: int, message: str, *, code: str | None = None) -> None:
        error = {"message": message, "type": "invalid_request_error", "param": None, "code": code}
        self._send_json(status, {"error": error})

    def _completion(self, body: dict, content: str, finish_reason: str) -> None:
        with self.state.lock:
            self.state.served += 1
            number = self.state.served
        prompt_chars = sum(len(m.get("content") or "") for m in body["messages"])
        prompt_tokens, completion_tokens = prompt_chars // 4 + 1, len(content) // 4 + 1
        self._send_json(
            200,
            {
                "id": f"chatcmpl-test{number:06d}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": self.state.answer_model or body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content, "refusal": None},
                        "logprobs": None,
                        "finish_reason": finish_reason,
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
                "system_fingerprint": "fp_test",
            },
        )

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (a timeout test); nothing to answer.
            self.close_connection = True


def _request_problem(body: Any) -> str | None:
    """What is wrong with a chat completions request body, as OpenAI would word it."""
    if not isinstance(body, dict):
        return "The request body must be a JSON object."
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "you must provide a model parameter"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty array."
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in _ROLES:
            return f"Invalid value for 'messages[{index}].role'."
        if not isinstance(message.get("content"), str):
            return f"Invalid type for 'messages[{index}].content': expected a string."
    temperature = body.get("temperature", 1)
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        return "Invalid type for 'temperature': expected a decimal."
    if not 0 <= temperature <= 2:
        return f"Invalid 'temperature': decimal above maximum value. Got {temperature}."
    response_format = body.get("response_format")
    if response_format is not None:
        kind = response_format.get("type") if isinstance(response_format, dict) else None
        if kind not in ("text", "json_object", "json_schema"):
            return "Invalid value for 'response_format.type'."
        if kind == "json_object" and not any(
            "json" in message["content"].lower() for message in messages
        ):
            return (
                "'messages' must contain the word 'json' in some form, to use 'response_format' "
                "of type 'json_object'."
            )
    return None
