"""The chat channel: one message to a team's channel through a Microsoft Teams Workflows (or
legacy connector) webhook or a Slack incoming webhook.

A webhook URL is a bearer secret: whoever has it can post to the channel. It never appears in
a reason (delivery rows are read by every member of the account) nor in an error message; a
reason names the service and, when the answer says it in a few words, why it refused.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

from webapp.integrations import outbound
from webapp.integrations.psa.base import parse_retry_after
from webapp.services.deliveries import Permanent, Retryable

PROVIDERS = {"teams": "Teams", "slack": "Slack"}   # provider: how reasons name it

# Slack's block limits (https://api.slack.com/reference/block-kit/blocks), counted in UTF-16
# code units to be safe; Teams takes a 28 KB message, which these lengths keep well under.
MAX_TITLE = 150            # a Slack header block's text
MAX_FIELD = 200            # a client or escalator name
MAX_SECTION = 3000         # a Slack section block's text
MAX_FALLBACK = 3000        # the notification text shown where blocks are not
MAX_URL = 2048

# A webhook answers in a few bytes; anything much larger is not a chat service talking.
MAX_RESPONSE_BYTES = 64 * 1024
MAX_DETAIL = 120           # the longest error text of an answer a reason quotes

ADAPTIVE_CARD_SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
ADAPTIVE_CARD_VERSION = "1.4"   # what Teams renders everywhere (desktop, web, mobile)
BUTTON = "Open in queue"


@dataclass(frozen=True)
class ChatFacts:
    """What a chat message says about an escalation; `reminder` means it is still unclaimed."""

    title: str
    client: str
    urgency: str
    escalator: str
    note: str
    link: str
    reminder: bool = False


# ---- the message ------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_CONTROL_BUT_NEWLINE = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]")
_SLACK_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def _line(value: object) -> str:
    """Text a user typed, on one line: a line break in a title would break a header."""
    return " ".join(_CONTROL.sub(" ", str(value or "")).split())


def _text(value: object) -> str:
    """Multi-line text a user typed, with its line breaks and no other control characters."""
    text = str(value or "").replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROL_BUT_NEWLINE.sub("", text).strip()


def _units(text: str) -> int:
    """Length in UTF-16 code units: never less than what Slack counts."""
    return len(text.encode("utf-16-le")) // 2


def _clip(text: str, limit: int, escapes: dict[str, str] | None = None) -> str:
    """text escaped with `escapes`, cut (with an ellipsis) to limit, never inside an escape:
    a long note must not make the payload invalid."""
    pieces = [escapes.get(ch, ch) for ch in text] if escapes else list(text)
    if sum(_units(piece) for piece in pieces) <= limit:
        return "".join(pieces)
    kept, size = [], 0
    for piece in pieces:
        size += _units(piece)
        if size > limit - 1:
            break
        kept.append(piece)
    return "".join(kept).rstrip() + "…"


def _mrkdwn(text: str, limit: int) -> str:
    """User text for a Slack mrkdwn field: &, < and > escaped, so `<!channel>` or
    `<https://x|y>` typed in a note stay text."""
    return _clip(text, limit, _SLACK_ESCAPES)


def _heading(facts: ChatFacts) -> str:
    title = _line(facts.title) or "untitled session"
    if facts.reminder:
        return f"Still unclaimed: {title}"
    return f"{'[URGENT] ' if _urgent(facts) else ''}Escalation: {title}"


def _urgent(facts: ChatFacts) -> bool:
    return _line(facts.urgency).lower() == "high"


def _fields(facts: ChatFacts) -> list[tuple[str, str]]:
    return [("Client", _line(facts.client) or "no client named"),
            ("Urgency", "HIGH" if _urgent(facts) else _line(facts.urgency) or "normal"),
            ("Escalated by", _line(facts.escalator) or "unknown")]


REMINDER_TEXT = "Nobody has claimed this escalation yet; it is still waiting in the queue."


def build_message(provider: str, facts: ChatFacts) -> dict[str, Any]:
    """The JSON body to post to the provider's webhook."""
    if provider == "teams":
        return _teams_message(facts)
    if provider == "slack":
        return _slack_message(facts)
    raise ValueError(f"unknown chat provider {provider!r}")


def _teams_message(facts: ChatFacts) -> dict[str, Any]:
    """The envelope both Workflows' "post card" flow and legacy connectors take: a message
    carrying one Adaptive Card."""
    title: dict[str, Any] = {"type": "TextBlock", "text": _clip(_heading(facts), MAX_TITLE),
                             "weight": "Bolder", "size": "Medium", "wrap": True}
    if _urgent(facts):
        title["color"] = "Attention"
    body: list[dict[str, Any]] = [title]
    if facts.reminder:
        body.append({"type": "TextBlock", "text": REMINDER_TEXT, "wrap": True,
                     "color": "Warning"})
    body.append({"type": "FactSet", "facts": [
        {"title": name, "value": _clip(value, MAX_FIELD)} for name, value in _fields(facts)]})
    body.append({"type": "TextBlock", "text": _clip(_text(facts.note) or "(no note)",
                                                    MAX_SECTION), "wrap": True})
    card = {"$schema": ADAPTIVE_CARD_SCHEMA, "type": "AdaptiveCard",
            "version": ADAPTIVE_CARD_VERSION, "body": body,
            "actions": [{"type": "Action.OpenUrl", "title": BUTTON, "url": facts.link}]}
    return {"type": "message", "attachments": [{
        "contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None,
        "content": card}]}


def _slack_message(facts: ChatFacts) -> dict[str, Any]:
    """Blocks, and a `text` Slack shows in notifications and where blocks are not."""
    heading = _heading(facts)
    client, _urgency, escalator = (value for _name, value in _fields(facts))
    summary = f"{_clip(heading, MAX_TITLE)} ({client}) from {escalator}"
    fallback = f"{_mrkdwn(summary, MAX_FALLBACK - len(facts.link) - 3)} <{facts.link}>"
    note_label = "*Escalation note*\n"
    blocks: list[dict[str, Any]] = [
        # plain_text is shown as written: nothing to escape, only to shorten
        {"type": "header", "text": {"type": "plain_text", "text": _clip(heading, MAX_TITLE),
                                    "emoji": False}},
    ]
    if facts.reminder:
        blocks.append({"type": "section", "text": {"type": "mrkdwn",
                                                   "text": f":warning: {REMINDER_TEXT}"}})
    blocks += [
        {"type": "section", "fields": [
            {"type": "mrkdwn", "text": f"*{name}*\n{_mrkdwn(value, MAX_FIELD)}"}
            for name, value in _fields(facts)]},
        {"type": "section", "text": {"type": "mrkdwn", "text": note_label + _mrkdwn(
            _text(facts.note) or "(no note)", MAX_SECTION - len(note_label))}},
        {"type": "actions", "elements": [
            {"type": "button", "action_id": "open_in_queue",
             "text": {"type": "plain_text", "text": BUTTON}, "url": facts.link,
             **({"style": "danger"} if _urgent(facts) else {"style": "primary"})}]},
    ]
    return {"text": fallback, "blocks": blocks}


# ---- the webhook URL ------------------------------------------------------------------------

def check_webhook_url(provider: str, url: object, *, allow_private: bool = False) -> str | None:
    """Why a webhook URL cannot be saved, or None. Without `allow_private` it must be https
    to a host that can be public (outbound.refusal_for_url); the message never repeats the
    URL (a secret), at most its host."""
    if provider not in PROVIDERS:
        return f"unknown chat provider {provider!r}; use one of {', '.join(PROVIDERS)}"
    if not isinstance(url, str) or not url.strip():
        return "a webhook URL is required"
    url = url.strip()
    if len(url) > MAX_URL:
        return f"the webhook URL is longer than {MAX_URL} characters"
    if any(ch.isspace() for ch in url) or _CONTROL.search(url):
        return "the webhook URL must not contain spaces or control characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return "the webhook URL is not a valid URL"
    if parts.scheme.lower() not in ("https", "http"):
        return "the webhook URL must start with https://"
    if not parts.hostname:
        return "the webhook URL has no host"
    if parts.username is not None or parts.password is not None:
        return "the webhook URL must not carry a user name or password"
    if not allow_private:
        return outbound.refusal_for_url(url)
    return None


# ---- posting ----------------------------------------------------------------------------

def post(provider: str, webhook_url: str, payload: dict[str, Any], *, allow_private: bool,
         deadline: float, http: httpx.Client | None = None) -> str | None:
    """Post one message; any 2xx is delivered (Workflows answers 202 and nothing, a legacy
    connector 200 "1", Slack 200 "ok"). Returns Workflows' run id when it gives one.

    Raises Retryable (429 with its Retry-After, 408, 5xx, no connection, no complete answer)
    or Permanent (any other answer, plain http or a non-public host when those are refused,
    an unusable URL). A message whose answer was lost may have been posted: retrying it risks
    a second message, which is better than none for an escalation.
    """
    name = PROVIDERS.get(provider)
    if name is None:
        raise Permanent(f"unknown chat provider {provider!r}")
    redact = _redactor(webhook_url)
    own = http is None
    client = outbound.client(allow_private) if own else http
    try:
        response = _send(name, client, webhook_url, payload, deadline)
    finally:
        if own:
            client.close()
    _check(name, response, redact)
    return response.headers.get("x-ms-workflow-run-id", "")[:200] or None


def _send(name: str, http: httpx.Client, url: str, payload: dict[str, Any],
          deadline: float) -> httpx.Response:
    """One POST through outbound; transport failures become the delivery layer's errors,
    named by type only (an httpx message may carry the URL)."""
    try:
        return outbound.send(http, "POST", url, deadline=deadline, max_bytes=MAX_RESPONSE_BYTES,
                             json=payload, timeout=httpx.Timeout(deadline))
    except httpx.RequestError as exc:
        failure = outbound.unsent(exc, "the webhook URL", "the webhook's host")
        if failure is not None:
            raise (Permanent if failure.permanent else Retryable)(
                f"{name}: {failure.reason}") from exc
        # it may have reached the service: a retry risks a second message, which is better
        # than none for an escalation
        raise Retryable(f"{name}: {_no_answer(exc, deadline)}; the message may have been "
                        "posted") from exc


def _no_answer(exc: httpx.RequestError, deadline: float) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return f"no complete answer within {deadline:g}s"
    if isinstance(exc, outbound.ResponseTooLarge):
        return f"answer larger than {MAX_RESPONSE_BYTES} bytes, not read"
    return f"no answer ({type(exc).__name__})"


def _check(name: str, response: httpx.Response, redact: Callable[[str], str]) -> None:
    """Raise the error an unsuccessful answer stands for."""
    status = response.status_code
    if 200 <= status < 300:
        return
    detail = redact(_detail(response))
    said = f"{status} {detail}" if detail else str(status)
    if status == 429:
        raise Retryable(f"{name}: rate limited ({said})",
                        retry_after=parse_retry_after(response.headers.get("Retry-After")))
    if status == 408:
        raise Retryable(f"{name}: request timed out ({said})")
    if status >= 500:
        raise Retryable(f"{name}: server error ({said})",
                        retry_after=parse_retry_after(response.headers.get("Retry-After")))
    if 300 <= status < 400:
        raise Permanent(f"{name}: unexpected redirect ({status}); check the webhook URL")
    if status in (401, 403, 404, 410):   # a removed webhook, an archived or deleted channel
        raise Permanent(f"{name}: {said}; check the account's chat webhook")
    raise Permanent(f"{name}: {said}")


def _detail(response: httpx.Response) -> str:
    """The few words of why, from the answer: Slack's error code (`channel_is_archived`), a
    Workflows error code, a legacy connector's short sentence; nothing from a long body or an
    HTML page, whose text could be anything."""
    try:
        body = response.json()
    except ValueError:
        text = " ".join(_CONTROL.sub(" ", response.text).split())
        return text if text and len(text) <= MAX_DETAIL and not text.startswith("<") else ""
    found: Any = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):   # Workflows: {"error": {"code", "message"}}
            found = error.get("code") or error.get("message")
        else:
            found = error or body.get("code") or body.get("message")
    elif isinstance(body, str):
        found = body
    if not isinstance(found, str):
        return ""
    text = " ".join(_CONTROL.sub(" ", found).split())
    return text if len(text) <= MAX_DETAIL else ""


def _redactor(url: str) -> Callable[[str], str]:
    """A function hiding the webhook URL and each of its secret-looking parts (path segments,
    query values: Slack's token, Workflows' id and sig) in a text, in case an answer echoes
    them."""
    secrets = {url, url.strip()}
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        parts = None
    if parts is not None:
        secrets.add(parts.path)
        secrets.update(segment for segment in parts.path.split("/"))
        secrets.update(value for _key, value in parse_qsl(parts.query, keep_blank_values=True))
        secrets.add(parts.query)
    # a token, an id or a signature: long, or with digits in it; not "services" or "invoke"
    secrets = sorted((s for s in secrets
                      if len(s) >= 16 or (len(s) >= 6 and any(c.isdigit() for c in s))),
                     key=len, reverse=True)

    def redact(text: str) -> str:
        for secret in secrets:
            text = text.replace(secret, "***")
        return text

    return redact
