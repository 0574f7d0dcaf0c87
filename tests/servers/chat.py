"""A local HTTP server that speaks the chat webhooks (Teams Workflows, the legacy Teams
connector, Slack incoming webhooks), with faults.

Each kind has one webhook URL of the real shape, secret parts and all, so tests can prove the
URL never leaks into a reason:

- Teams Workflows: POST /workflows/{id}/triggers/manual/paths/invoke?api-version=...&sig=...
  takes the message envelope with an Adaptive Card; 202 and no body.
- legacy Teams connector: POST /webhookb2/{id}@{tenant}/IncomingWebhook/{id}/{id}; 200 "1".
- Slack: POST /services/T.../B.../{token}; 200 "ok", 400 "invalid_payload" or "no_text".
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.servers.loopback import Handler, LoopbackServer, Reply, drop

TEAMS = "teams"              # Workflows
TEAMS_LEGACY = "teams-legacy"
SLACK = "slack"

ADAPTIVE_CARD = "application/vnd.microsoft.card.adaptive"
CARD_VERSIONS = ("1.0", "1.1", "1.2", "1.3", "1.4", "1.5")   # what Teams renders

# Error bodies per status when a fault names none: Slack answers a bare code as text/plain,
# Workflows a JSON error object, the legacy connector a sentence.
SLACK_ERRORS = {400: "invalid_payload", 403: "action_prohibited", 404: "channel_not_found",
                410: "channel_is_archived", 429: "rate_limited", 500: "rollup_error",
                503: "service_unavailable"}
TEAMS_ERRORS = {400: "TriggerInputSchemaMismatch", 401: "DirectApiAuthorizationRequired",
                403: "DirectApiInvalidAuthorizationSignature", 404: "WorkflowNotFound",
                429: "WorkflowRequestsThrottled", 500: "InternalServerError",
                502: "BadGateway", 503: "ServiceUnavailable"}
LEGACY_ERRORS = {400: "Bad payload received by generic incoming webhook.",
                 404: "Webhook not found", 410: "Connector configuration not found",
                 429: "Microsoft Teams endpoint returned HTTP error 429",
                 500: "Internal server error"}

# Slack's block limits, as far as this server checks them.
SLACK_BLOCK_TYPES = {"header", "section", "actions", "context", "divider", "image",
                     "rich_text", "input", "file", "video"}


@dataclass
class Recorded:
    """One request as the server received it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names lower-cased
    body: bytes
    time: float  # time.monotonic() when it arrived

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


@dataclass(frozen=True)
class Message:
    """A message the server accepted (answered with a success, or stored before a drop)."""

    kind: str  # TEAMS, TEAMS_LEGACY or SLACK
    path: str
    json: Any
    time: float


@dataclass
class Fault:
    """What to do to the next `times` requests whose path contains `path` ("" is any)."""

    path: str = ""
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None  # None: the kind's usual error body for the status
    # "drop": close without handling; "accept_then_drop": accept (record) then close
    action: str | None = None
    delay: float = 0.0  # alone: accept, then wait this long before answering
    times: int = 1

    def matches(self, path: str) -> bool:
        return self.path.lower() in path.lower()


class ChatServer:
    """The three webhooks on one loopback port; use as a context manager or start()/stop()."""

    def __init__(self) -> None:
        self.workflow_id = secrets.token_hex(16)
        self.workflow_sig = secrets.token_urlsafe(32)
        self.legacy_path = (f"/webhookb2/{_guid()}@{_guid()}/IncomingWebhook/"
                            f"{secrets.token_hex(16)}/{_guid()}")
        self.slack_path = (f"/services/T{secrets.token_hex(4).upper()}/"
                           f"B{secrets.token_hex(5).upper()}/{secrets.token_urlsafe(18)}")
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._faults: list[Fault] = []
        self._requests: list[Recorded] = []
        self._messages: list[Message] = []
        self._rejections: list[tuple[str, str]] = []
        self._runs = 0
        self._http: LoopbackServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------

    def start(self) -> ChatServer:
        """Listen on an ephemeral loopback port in a background thread."""
        self._stopping.clear()
        self._http = LoopbackServer(self)
        self._thread = threading.Thread(
            target=self._http.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening, cutting short any injected delay."""
        self._stopping.set()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None

    def __enter__(self) -> ChatServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The server's base URL, e.g. http://127.0.0.1:54321."""
        assert self._http is not None, "server not started"
        host, port = self._http.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def teams_url(self) -> str:
        """The Workflows webhook URL ("When a Teams webhook request is received")."""
        return (f"{self.url}/workflows/{self.workflow_id}/triggers/manual/paths/invoke"
                f"?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0"
                f"&sig={self.workflow_sig}")

    @property
    def teams_legacy_url(self) -> str:
        """The legacy Office 365 connector webhook URL."""
        return self.url + self.legacy_path

    @property
    def slack_url(self) -> str:
        """The Slack incoming webhook URL."""
        return self.url + self.slack_path

    def webhook_url(self, kind: str) -> str:
        """The URL of TEAMS, TEAMS_LEGACY or SLACK."""
        return {TEAMS: self.teams_url, TEAMS_LEGACY: self.teams_legacy_url,
                SLACK: self.slack_url}[kind]

    # -- test controls and observations ----------------------------------

    def inject(
        self,
        path: str = "",
        *,
        status: int | None = None,
        headers: dict[str, str] | None = None,
        body: Any = None,
        action: str | None = None,
        delay: float = 0.0,
        times: int = 1,
    ) -> None:
        """Apply a fault to the next `times` requests whose path contains `path` (any when
        empty; `/services/`, `/workflows/` or `/webhookb2/` picks one kind).

        status: answer with it and body (the kind's usual error body when None) instead of
        handling; action "drop": close without a byte of answer; "accept_then_drop": accept
        the message, then close without answering; delay alone: accept, then wait before
        answering.
        """
        fault = Fault(path, status, dict(headers or {}), body, action, delay, times)
        with self._lock:
            self._faults.append(fault)

    def fail_next(self, status: int, *, retry_after: float | str | None = None,
                  path: str = "", body: Any = None, times: int = 1) -> None:
        """Answer the next requests with status and the kind's error body for it (Slack:
        400 invalid_payload, 403 action_prohibited, 404 channel_not_found, 410
        channel_is_archived, 429 rate_limited, 503 service_unavailable), and a Retry-After
        header when given."""
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        self.inject(path, status=status, headers=headers, body=body, times=times)

    @property
    def requests(self) -> list[Recorded]:
        """Every request received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def messages(self) -> list[Message]:
        """Every message accepted so far, in arrival order."""
        with self._lock:
            return list(self._messages)

    def messages_to(self, kind: str) -> list[Message]:
        """The accepted messages of one kind (TEAMS, TEAMS_LEGACY, SLACK)."""
        return [m for m in self.messages if m.kind == kind]

    @property
    def rejections(self) -> list[tuple[str, str]]:
        """(kind, why) of every message refused as malformed."""
        with self._lock:
            return list(self._rejections)

    # -- request handling ------------------------------------------------

    def handle(self, h: Handler) -> None:
        parts = urlsplit(h.path)
        path = unquote(parts.path)
        body = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        record = Recorded(h.command, path, parse_qs(parts.query),
                          {k.lower(): v for k, v in h.headers.items()}, body, time.monotonic())
        with self._lock:
            self._requests.append(record)
            fault = next((f for f in self._faults if f.matches(path)), None)
            if fault is not None:
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
        kind = self._kind(path)
        if fault is not None and fault.action == "drop":
            return drop(h)
        if fault is not None and fault.status is not None:
            self._stopping.wait(fault.delay)
            payload = fault.body if fault.body is not None else _error_body(kind, fault.status)
            return self._answer(h, fault.status, payload, fault.headers)
        try:
            status, payload, headers = self._route(kind, record)
        except Reply as reply:
            status, payload, headers = reply.status, reply.body, reply.headers
        if fault is not None and fault.action == "accept_then_drop":
            return drop(h)
        if fault is not None and fault.delay:
            self._stopping.wait(fault.delay)
        self._answer(h, status, payload, headers)

    @staticmethod
    def _kind(path: str) -> str | None:
        if path.startswith("/workflows/"):
            return TEAMS
        if path.startswith("/webhookb2/"):
            return TEAMS_LEGACY
        if path.startswith("/services/"):
            return SLACK
        return None

    def _route(self, kind: str | None, r: Recorded) -> tuple[int, Any, dict[str, str]]:
        if kind is None:
            raise Reply(404, "Not Found")
        if r.method != "POST":
            raise Reply(405, _error_body(kind, 405))
        if kind == TEAMS:
            self._teams_address(r)
        elif kind == TEAMS_LEGACY and r.path != self.legacy_path:
            raise Reply(404, _error_body(kind, 404))
        elif kind == SLACK and r.path != self.slack_path:
            raise Reply(404, "no_service")
        try:
            body = r.json()
        except ValueError:
            body = None
        if kind == SLACK:
            problem = _slack_problem(body, r)
        else:
            problem = _teams_problem(body, r, legacy=kind == TEAMS_LEGACY)
        if problem is not None:
            code, why = problem
            with self._lock:
                self._rejections.append((kind, why))
            if kind == SLACK:
                raise Reply(400, code)
            if kind == TEAMS_LEGACY:
                raise Reply(400, LEGACY_ERRORS[400])
            raise Reply(400, {"error": {"code": code, "message": why}})
        with self._lock:
            self._messages.append(Message(kind, r.path, body, r.time))
            self._runs += 1
            run = f"08585{self._runs:06d}CU00"
        if kind == TEAMS:
            return 202, None, {"x-ms-workflow-run-id": run}
        return 200, "1" if kind == TEAMS_LEGACY else "ok", {}

    def _teams_address(self, r: Recorded) -> None:
        expected = f"/workflows/{self.workflow_id}/triggers/manual/paths/invoke"
        if r.path != expected:
            raise Reply(404, {"error": {
                "code": "WorkflowNotFound",
                "message": f"The workflow '{r.path.split('/')[2]}' could not be found."}})
        if r.query.get("sig", [""])[0] != self.workflow_sig:
            raise Reply(401, {"error": {
                "code": "DirectApiInvalidAuthorizationSignature",
                "message": "The provided authorization signature is not valid."}})

    @staticmethod
    def _answer(h: Handler, status: int, payload: Any, headers: dict[str, str]) -> None:
        if payload is None:
            data, kind = b"", None
        elif isinstance(payload, bytes):
            data, kind = payload, "application/octet-stream"
        elif isinstance(payload, str):
            data, kind = payload.encode(), "text/plain; charset=utf-8"
        else:
            data, kind = json.dumps(payload).encode(), "application/json; charset=utf-8"
        try:
            h.send_response(status)
            if kind:
                h.send_header("Content-Type", kind)
            h.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                h.send_header(name, value)
            h.end_headers()
            h.wfile.write(data)
            h.wfile.flush()
        except OSError:
            h.close_connection = True  # the client gave up waiting (a timeout test)


def _guid() -> str:
    raw = secrets.token_hex(16)
    return f"{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:]}"


def _error_body(kind: str | None, status: int) -> Any:
    """What each service answers with a status it chose."""
    if kind == SLACK:
        return SLACK_ERRORS.get(status, "unknown_error")
    if kind == TEAMS:
        code = TEAMS_ERRORS.get(status, "RequestFailed")
        return {"error": {"code": code, "message": f"The request failed with {status}."}}
    if kind == TEAMS_LEGACY:
        return LEGACY_ERRORS.get(status, f"Webhook error {status}")
    return "Not Found"


def _is_json(r: Recorded) -> bool:
    return r.headers.get("content-type", "").split(";")[0].strip().lower() == "application/json"


def _teams_problem(body: Any, r: Recorded, *, legacy: bool) -> tuple[str, str] | None:
    """(code, why) of a Teams message that is not the Adaptive Card envelope, or None. The
    legacy connector also takes a MessageCard ({"text": ...})."""
    bad = "TriggerInputSchemaMismatch"
    if not _is_json(r):
        return "UnsupportedMediaType", "the body must be application/json"
    if not isinstance(body, dict):
        return bad, "the body must be a JSON object"
    if legacy and body.get("@type") == "MessageCard" or legacy and "attachments" not in body:
        ok = isinstance(body.get("text"), str) and body["text"] or body.get("summary")
        return None if ok else (bad, "Summary or Text is required.")
    if body.get("type") != "message":
        return bad, 'type must be "message"'
    attachments = body.get("attachments")
    if not isinstance(attachments, list) or not attachments:
        return bad, "attachments must be a non-empty array"
    for attachment in attachments:
        if not isinstance(attachment, dict) or attachment.get("contentType") != ADAPTIVE_CARD:
            return bad, f"each attachment's contentType must be {ADAPTIVE_CARD}"
        card = attachment.get("content")
        if not isinstance(card, dict) or card.get("type") != "AdaptiveCard":
            return bad, 'an attachment\'s content must be an object of type "AdaptiveCard"'
        if card.get("version") not in CARD_VERSIONS:
            return bad, f"unsupported Adaptive Card version {card.get('version')!r}"
        if not isinstance(card.get("body"), list) or not card["body"]:
            return bad, "the card's body must be a non-empty array"
        for element in card["body"]:
            if not isinstance(element, dict) or not isinstance(element.get("type"), str):
                return bad, "each card element needs a type"
            if element["type"] == "TextBlock" and not isinstance(element.get("text"), str):
                return bad, "a TextBlock needs its text"
            if element["type"] == "FactSet" and not all(
                isinstance(f, dict) and isinstance(f.get("title"), str)
                and isinstance(f.get("value"), str) for f in element.get("facts") or [None]
            ):
                return bad, "a FactSet needs facts of title and value"
        for action in card.get("actions") or []:
            if not isinstance(action, dict) or not isinstance(action.get("type"), str):
                return bad, "each card action needs a type"
            if action["type"] == "Action.OpenUrl" and not str(action.get("url", "")).startswith(
                    ("https://", "http://")):
                return bad, "Action.OpenUrl needs an absolute url"
    if len(r.body) > 28 * 1024:
        return "MessageTooLarge", "the message is larger than 28 KB"
    return None


def _plain(value: Any, limit: int) -> bool:
    return (isinstance(value, dict) and value.get("type") in ("plain_text", "mrkdwn")
            and isinstance(value.get("text"), str) and 0 < len(value["text"]) <= limit)


def _slack_problem(body: Any, r: Recorded) -> tuple[str, str] | None:
    """(code, why) of a Slack message that the webhook would refuse, or None."""
    if not _is_json(r) or not isinstance(body, dict):
        return "invalid_payload", "the body must be a JSON object sent as application/json"
    text, blocks = body.get("text"), body.get("blocks")
    if text is not None and (not isinstance(text, str) or len(text) > 40000):
        return "invalid_payload", "text must be a string of at most 40000 characters"
    if blocks is None:
        return None if text else ("no_text", "text or blocks is required")
    if not isinstance(blocks, list) or not 0 < len(blocks) <= 50:
        return "invalid_payload", "blocks must be an array of 1 to 50 blocks"
    for block in blocks:
        if not isinstance(block, dict) or block.get("type") not in SLACK_BLOCK_TYPES:
            return "invalid_payload", f"unknown block {block!r:.60}"
        kind = block["type"]
        if kind == "header" and not (_plain(block.get("text"), 150)
                                     and block["text"]["type"] == "plain_text"):
            return "invalid_payload", "a header needs plain_text of at most 150 characters"
        if kind == "section":
            fields = block.get("fields")
            if "text" not in block and not fields:
                return "invalid_payload", "a section needs text or fields"
            if "text" in block and not _plain(block["text"], 3000):
                return "invalid_payload", "a section's text is at most 3000 characters"
            if fields is not None and not (isinstance(fields, list) and len(fields) <= 10
                                           and all(_plain(f, 2000) for f in fields)):
                return "invalid_payload", "a section has at most 10 fields of 2000 characters"
        if kind == "actions":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 0 < len(elements) <= 25:
                return "invalid_payload", "actions need 1 to 25 elements"
            for element in elements:
                if not isinstance(element, dict) or element.get("type") != "button":
                    continue
                if not (_plain(element.get("text"), 75)
                        and element["text"]["type"] == "plain_text"):
                    return "invalid_payload", "a button needs plain_text of at most 75"
                url = element.get("url")
                if url is not None and not (isinstance(url, str) and len(url) <= 3000):
                    return "invalid_payload", "a button's url is at most 3000 characters"
                if element.get("style") not in (None, "primary", "danger"):
                    return "invalid_payload", "a button's style is primary or danger"
    return None
