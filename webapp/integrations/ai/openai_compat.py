"""Assessment by any server that speaks OpenAI's chat completions API."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import httpx

from webapp.integrations import outbound
from webapp.integrations.ai.base import (
    AiInvalidOutput,
    AiPermanent,
    AiRetryable,
    Assessment,
    AssessmentProvider,
)
from webapp.integrations.psa.base import parse_retry_after

MAX_REASON = 300
# The transcript's tail carries the latest state; older messages are dropped first
# so the prompt stays well inside small context windows.
MAX_MESSAGES = 40
MAX_TRANSCRIPT_CHARS = 12_000
MAX_MESSAGE_CHARS = 2_000
MAX_FIELD_CHARS = 4_000
MAX_ITEMS = 8
MAX_ITEM_CHARS = 500
MAX_SUMMARY_CHARS = 2_000

SYSTEM_PROMPT = (
    "You are a senior engineer at a managed IT service provider. A junior engineer is stuck "
    "on a client's problem and is escalating it to a senior colleague. Read the case and "
    "write a diagnostic assessment for that senior.\n"
    "Answer with one JSON object and nothing else, with exactly these keys:\n"
    '  "summary": 2-3 sentences: what is wrong for which client, what has been tried, '
    "how urgent it is;\n"
    '  "likely_causes": 3-5 strings, most likely first, each one sentence;\n'
    '  "next_steps": 3-8 strings, concrete checks or commands in the order to run them, '
    "skipping what the transcript says was already done;\n"
    '  "confidence": a number from 0 to 1 for how sure you are of the most likely cause.'
)

_FENCE = re.compile(r"^\s*```[a-zA-Z]*\s*\n?(.*?)\n?\s*```\s*$", re.DOTALL)


class OpenAICompatProvider(AssessmentProvider):
    """Asks an OpenAI-compatible chat completions endpoint for the assessment."""

    name = "openai"

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout: float = 20.0,
        http: httpx.Client | None = None,
        allow_private: bool = False,
        max_response_bytes: int = outbound.DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._allow_private = allow_private
        self._max_bytes = max_response_bytes
        # `timeout` bounds the whole request, first byte to last, not each read
        self._deadline = timeout
        self.model = model
        self._api_key = api_key or None
        self._timeout = httpx.Timeout(timeout)
        self._http = http

    def assess(self, case: dict) -> Assessment:
        """Send the case to the model and return its validated assessment."""
        payload = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": render_case(case)},
            ],
            "temperature": 0.2,
            "response_format": {"type": "json_object"},
        }
        response = self._post(payload)
        self._check(response)
        return self._parse(response)

    def _post(self, payload: dict) -> httpx.Response:
        url = f"{self.base_url}/chat/completions"
        headers = {"Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        http = self._http if self._http is not None else outbound.client(self._allow_private)
        try:
            return outbound.send(http, "POST", url, deadline=self._deadline,
                                 max_bytes=self._max_bytes, json=payload, headers=headers,
                                 timeout=self._timeout)
        except outbound.PlainHttpRefused as exc:
            raise AiPermanent("AI provider: AI_BASE_URL must use https") from exc
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise AiPermanent("AI provider: the configured base URL cannot be used") from exc
        except httpx.TimeoutException as exc:
            raise AiRetryable(
                f"AI provider: timed out, no complete answer within {self._deadline:g}s "
                f"({type(exc).__name__})"
            ) from exc
        except outbound.ResponseTooLarge as exc:
            raise AiRetryable(
                f"AI provider: answer larger than {self._max_bytes} bytes, not read") from exc
        except (httpx.ConnectError, httpx.ProxyError) as exc:
            if outbound.is_refusal(exc):
                raise AiPermanent(
                    "AI provider: refused to connect: the configured host is not a public "
                    "address (see ALLOW_PRIVATE_ADDRESSES)") from exc
            raise AiRetryable(f"AI provider: cannot connect ({type(exc).__name__})") from exc
        except httpx.RequestError as exc:
            # A dropped connection or a broken answer; asking again is safe, nothing was written.
            raise AiRetryable(f"AI provider: no answer ({type(exc).__name__})") from exc
        finally:
            if http is not self._http:
                http.close()

    def _check(self, response: httpx.Response) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        message = _error_message(response)
        detail = f": {message}" if message else ""
        if status == 429:
            code = _error_code(response)
            # OpenAI answers 429 for an exhausted quota too; waiting will not refill it.
            if code == "insufficient_quota":
                raise AiPermanent(self._redact(f"AI provider: quota exhausted (429){detail}"))
            raise AiRetryable(
                self._redact(f"AI provider: rate limited (429){detail}"),
                retry_after=_retry_after(response),
            )
        if status in (401, 403):
            raise AiPermanent(self._redact(f"AI provider: API key rejected ({status}){detail}"))
        if status == 404:
            raise AiPermanent(
                self._redact(
                    f"AI provider: model {self.model!r} or endpoint not found (404){detail}"
                )
            )
        if status in (408, 409):
            raise AiRetryable(self._redact(f"AI provider: request not completed ({status})"))
        if status < 500:
            raise AiPermanent(self._redact(f"AI provider: request rejected ({status}){detail}"))
        raise AiRetryable(
            self._redact(f"AI provider: server error ({status}){detail}"),
            retry_after=_retry_after(response),
        )

    def _parse(self, response: httpx.Response) -> Assessment:
        try:
            body = response.json()
        except ValueError:
            raise AiPermanent("AI provider: the answer is not JSON; check the base URL") from None
        try:
            choice = body["choices"][0]
            content = choice["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise AiPermanent(
                "AI provider: the answer has no choices[0].message.content"
            ) from None
        if not isinstance(content, str) or not content.strip():
            raise AiInvalidOutput("invalid assessment JSON: the model returned no content")
        truncated = isinstance(choice, dict) and choice.get("finish_reason") == "length"
        try:
            fields = parse_assessment(content)
        except AiPermanent as exc:
            reason = exc.reason
            if truncated:
                reason += " (the answer was cut off at the length limit)"
            raise type(exc)(self._redact(reason)) from None
        model = body.get("model") if isinstance(body, dict) else None
        return Assessment(
            **fields,
            provider=self.name,
            model=model if isinstance(model, str) and model.strip() else self.model,
        )

    def _redact(self, text: str) -> str:
        if self._api_key:
            text = text.replace(self._api_key, "***")
        return text[:MAX_REASON]


def parse_assessment(content: str) -> dict[str, Any]:
    """The summary, likely_causes, next_steps and confidence in a model's answer, validated."""
    data = _load_json_object(content)
    summary = data.get("summary")
    if not isinstance(summary, str) or not summary.strip():
        raise AiInvalidOutput("invalid assessment JSON: summary must be a non-empty string")
    return {
        "summary": _clip(summary.strip(), MAX_SUMMARY_CHARS),
        "likely_causes": _string_list(data, "likely_causes"),
        "next_steps": _string_list(data, "next_steps"),
        "confidence": _confidence(data.get("confidence")),
    }


def _load_json_object(content: str) -> dict:
    text = content.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    try:
        data = json.loads(text)
    except ValueError:
        # Some models wrap the object in a sentence despite JSON mode.
        start, end = text.find("{"), text.rfind("}")
        try:
            data = json.loads(text[start : end + 1]) if 0 <= start < end else None
        except ValueError:
            data = None
        if data is None:
            raise AiInvalidOutput(
                f"invalid assessment JSON: the model's answer does not parse ({_preview(content)})"
            ) from None
    if not isinstance(data, dict):
        raise AiInvalidOutput(
            f"invalid assessment JSON: expected an object, got {type(data).__name__}"
        )
    return data


def _string_list(data: dict, key: str) -> list[str]:
    value = data.get(key)
    if not isinstance(value, list) or not value:
        raise AiInvalidOutput(f"invalid assessment JSON: {key} must be a non-empty list of strings")
    items: list[str] = []
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise AiInvalidOutput(f"invalid assessment JSON: {key} must hold non-empty strings")
        items.append(_clip(item.strip(), MAX_ITEM_CHARS))
    return items[:MAX_ITEMS]


def _confidence(value: Any) -> float:
    # bool is an int in Python, but "confidence": true is not a number.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise AiInvalidOutput("invalid assessment JSON: confidence must be a number from 0 to 1")
    return min(1.0, max(0.0, float(value)))


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _preview(content: str) -> str:
    text = " ".join(content.split())
    return repr(_clip(text, 60))


def _error_body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _error_message(response: httpx.Response) -> str:
    """The message in an error answer, OpenAI's {"error": {"message"}} shape or plain text."""
    body = _error_body(response)
    if body is None:
        text = response.text.strip()
        # An HTML error page from a proxy says nothing useful in a reason.
        return "" if text.startswith("<") else " ".join(text.split())[:200]
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return " ".join(error["message"].split())[:200]
    if isinstance(error, str):
        return error[:200]
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"][:200]
    return ""


def _error_code(response: httpx.Response) -> str | None:
    body = _error_body(response)
    error = body.get("error") if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else None


def _retry_after(response: httpx.Response) -> float | None:
    return parse_retry_after(response.headers.get("Retry-After"))


def render_case(case: dict) -> str:
    """The case as plain text for the model, with the transcript cut to its recent part."""
    lines = [
        f"Client: {_text(case.get('client_name')) or 'unknown'}",
        f"Session title: {_text(case.get('title')) or '(none)'}",
        f"Urgency: {_text(case.get('urgency')) or 'normal'}",
        "",
        "Problem as first reported:",
        _clip(_text(case.get("problem")), MAX_FIELD_CHARS) or "(none)",
        "",
        "Escalation note from the engineer:",
        _clip(_text(case.get("note")), MAX_FIELD_CHARS) or "(none)",
        "",
    ]
    messages = case.get("messages") or []
    if not isinstance(messages, list):
        messages = []
    rendered: list[str] = []
    used = 0
    for message in reversed(messages[-MAX_MESSAGES:]):
        if not isinstance(message, dict):
            continue
        content = _clip(_text(message.get("content")), MAX_MESSAGE_CHARS)
        role = "assistant" if message.get("role") == "assistant" else "engineer"
        when = _text(message.get("created_at"))
        line = f"[{when} {role}] {content}" if when else f"[{role}] {content}"
        if used + len(line) > MAX_TRANSCRIPT_CHARS and rendered:
            break
        rendered.append(line)
        used += len(line)
    rendered.reverse()
    total = sum(1 for message in messages if isinstance(message, dict))
    if not rendered:
        lines.append("Transcript: (empty)")
    elif len(rendered) < total:
        lines.append(f"Transcript (last {len(rendered)} of {total} messages):")
    else:
        lines.append(f"Transcript ({total} messages):")
    lines.extend(rendered)
    return "\n".join(lines)


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""

