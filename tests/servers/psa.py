"""A local HTTP server that speaks the ConnectWise, Autotask and HaloPSA API shapes, with faults."""

from __future__ import annotations

import base64
import contextlib
import html
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.servers.loopback import Handler, LoopbackServer, Reply, drop

CW_COMPANY = "acme"
CW_PUBLIC_KEY = "cwPublicKey7f3a"
CW_PRIVATE_KEY = "cwPrivateKey-S3cr3t-91bd"
CW_CLIENT_ID = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"
CW_CODEBASE = "v4_6_release/"

AT_USERNAME = "api-user@acme.example"
AT_SECRET = "atSecret-S3cr3t-4c2e"
AT_INTEGRATION_CODE = "ATINTEGRATIONCODE-S3cr3t-77A1"

HALO_CLIENT_ID = "halo-client-5d1f"
HALO_CLIENT_SECRET = "haloSecret-S3cr3t-0a9c"

SECRETS = (CW_PRIVATE_KEY, AT_SECRET, AT_INTEGRATION_CODE, HALO_CLIENT_SECRET)

AT_AUTH_500 = {
    "errors": ["Unable to authenticate. The API user's credentials or IntegrationCode is invalid."]
}
_TAG = re.compile(r"<[^>]+>")
_ID_SEGMENT = re.compile(r"/\d+(?=/|$)")


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

    def form(self) -> dict[str, str]:
        """The body parsed as a URL-encoded form."""
        return {k: v[0] for k, v in parse_qs(self.body.decode()).items()}


@dataclass
class Fault:
    """What to do to the next `times` requests matching method and path suffix."""

    method: str
    path: str
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    # "accept_then_drop", "drop", "auth_500", "trickle" (one byte every `delay` s), "huge"
    action: str | None = None
    delay: float = 0.0
    times: int = 1

    def matches(self, method: str, path: str) -> bool:
        return self.method == method and path.lower().endswith(self.path.lower())


class PsaServer:
    """The three PSAs on one loopback port; use as a context manager or start()/stop()."""

    def __init__(
        self,
        *,
        tickets: tuple[str, ...] = ("1001", "1002"),
        halo_tenant: str | None = None,
        halo_token_ttl: int = 3600,
        at_page_size: int = 500,
        at_users: dict[str, str] | None = None,
    ) -> None:
        self.tickets = {t: {"id": int(t), "summary": f"Ticket {t}"} for t in tickets}
        self.halo_tenant = halo_tenant
        self.halo_token_ttl = halo_token_ttl
        self.at_page_size = at_page_size
        # Autotask API users (name: secret), each of its own customer database.
        self.at_users = {AT_USERNAME: AT_SECRET, **(at_users or {})}
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._requests: list[Recorded] = []
        self._notes: dict[str, list[dict]] = {}
        self._next_id = 5001
        self._tokens: dict[str, float] = {}
        self._in_flight: dict[str, int] = {}
        self._max_in_flight: dict[str, int] = {}
        self._http: LoopbackServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------

    def start(self) -> PsaServer:
        """Listen on an ephemeral loopback port in a background thread."""
        self._http = LoopbackServer(self)
        self._thread = threading.Thread(
            target=self._http.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening."""
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None

    def __enter__(self) -> PsaServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The server's base URL, e.g. http://127.0.0.1:54321."""
        assert self._http is not None, "server not started"
        host, port = self._http.server_address[:2]
        return f"http://{host}:{port}"

    def settings(self, provider: str, **overrides: Any) -> dict:
        """Account PSA settings (the API.md shapes) that point at this server."""
        shapes = {
            "connectwise": {
                "site_url": self.url,
                "company_id": CW_COMPANY,
                "public_key": CW_PUBLIC_KEY,
                "private_key": CW_PRIVATE_KEY,
                "client_id": CW_CLIENT_ID,
            },
            "autotask": {
                "username": AT_USERNAME,
                "secret": AT_SECRET,
                "integration_code": AT_INTEGRATION_CODE,
                "zone_url": f"{self.url}/atservicesrest/",
            },
            "halopsa": {
                "base_url": self.url,
                "client_id": HALO_CLIENT_ID,
                "client_secret": HALO_CLIENT_SECRET,
                **({"tenant": self.halo_tenant} if self.halo_tenant else {}),
            },
        }
        return {**shapes[provider], **overrides}

    # -- test controls and observations ----------------------------------

    def inject(
        self,
        method: str,
        path: str,
        *,
        status: int | None = None,
        headers: dict[str, str] | None = None,
        body: Any = None,
        action: str | None = None,
        delay: float = 0.0,
        times: int = 1,
    ) -> None:
        """Apply a fault to the next `times` requests whose path ends with `path`.

        status: answer with it (and body) instead of handling; action "accept_then_drop":
        handle (store) then close without answering; "drop": close without handling;
        "auth_500": Autotask's authentication failure as a 500; delay alone: handle, then
        wait before answering.
        """
        fault = Fault(method.upper(), path, status, dict(headers or {}), body, action, delay, times)
        with self._lock:
            self._faults.append(fault)

    def clear_faults(self) -> None:
        """Forget every fault not yet used up: the PSA is healthy again."""
        with self._lock:
            self._faults.clear()

    def add_ticket(self, ticket_id: str) -> None:
        """Make a ticket exist."""
        with self._lock:
            self.tickets[str(ticket_id)] = {"id": int(ticket_id), "summary": f"Ticket {ticket_id}"}

    def seed_note(self, ticket_id: str, text: str) -> dict:
        """Put a note on a ticket directly (as if written earlier by someone else)."""
        return self._store(ticket_id, {
            "provider": "seed", "text": text, "description": text, "note": text,
            "note_html": html.escape(text, quote=False).replace("\n", "<br>"),
        })

    def notes(self, ticket_id: str) -> list[dict]:
        """The notes stored on a ticket, oldest first."""
        with self._lock:
            return [dict(n) for n in self._notes.get(str(ticket_id), [])]

    @property
    def requests(self) -> list[Recorded]:
        """Every request received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    def requests_to(self, method: str, path_suffix: str) -> list[Recorded]:
        """The requests with this method whose path ends with path_suffix (case-insensitive)."""
        return [
            r for r in self.requests
            if r.method == method.upper() and r.path.lower().endswith(path_suffix.lower())
        ]

    def max_in_flight(self, path_template: str, username: str | None = None) -> int:
        """The most requests to one path template (ids as {id}) handled at the same moment;
        with username, only those of that Autotask API user."""
        counter = path_template.lower() + (f" user={username.lower()}" if username else "")
        with self._lock:
            return self._max_in_flight.get(counter, 0)

    def revoke_tokens(self) -> None:
        """Expire every Halo token issued so far."""
        with self._lock:
            self._tokens.clear()

    # -- request handling ------------------------------------------------

    def handle(self, h: Handler) -> None:
        parts = urlsplit(h.path)
        path = unquote(parts.path)
        body = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        record = Recorded(
            h.command, path, parse_qs(parts.query),
            {k.lower(): v for k, v in h.headers.items()}, body, time.monotonic(),
        )
        template = _ID_SEGMENT.sub("/{id}", path).lower()
        counters = [template]
        if record.headers.get("username"):
            counters.append(f"{template} user={record.headers['username'].lower()}")
        with self._lock:
            self._requests.append(record)
            fault = next((f for f in self._faults if f.matches(h.command, path)), None)
            if fault is not None:
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
            for counter in counters:
                self._in_flight[counter] = self._in_flight.get(counter, 0) + 1
                self._max_in_flight[counter] = max(
                    self._max_in_flight.get(counter, 0), self._in_flight[counter]
                )
        left = False

        def leave() -> None:
            # Counted out before the answer goes, so a client that reacts to
            # the answer cannot be seen overlapping this request.
            nonlocal left
            if not left:
                left = True
                with self._lock:
                    for counter in counters:
                        self._in_flight[counter] -= 1

        try:
            if fault is not None and fault.action == "drop":
                return drop(h)
            if fault is not None and fault.action == "trickle":
                return self._trickle(h, fault.delay or 2.0)
            if fault is not None and fault.action == "huge":
                leave()
                return self._answer(h, 200, b"[" + b" " * (16 * 1024 * 1024) + b"]", {})
            if fault is not None and (fault.status is not None or fault.action == "auth_500"):
                time.sleep(fault.delay)
                status = 500 if fault.action == "auth_500" else fault.status
                payload = AT_AUTH_500 if fault.action == "auth_500" else fault.body
                leave()
                return self._answer(h, status, payload, fault.headers)
            try:
                status, payload, headers = 200, self._route(record), {}
                if isinstance(payload, tuple):
                    status, payload = payload
            except Reply as reply:
                status, payload, headers = reply.status, reply.body, reply.headers
            if fault is not None and fault.action == "accept_then_drop":
                return drop(h)
            if fault is not None and fault.delay:
                time.sleep(fault.delay)
            leave()
            self._answer(h, status, payload, headers)
        finally:
            leave()

    def _trickle(self, h: Handler, every: float) -> None:
        """Accept, then send the answer one byte every `every` seconds, for ten minutes or
        until the client goes away or the server stops."""
        h.close_connection = True
        answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + b"X-Slow: 1\r\n" * 400
        ends = time.monotonic() + 600
        with contextlib.suppress(OSError):
            for byte in answer:
                if self._http is None or time.monotonic() > ends:
                    return
                h.wfile.write(bytes([byte]))
                h.wfile.flush()
                time.sleep(every)

    @staticmethod
    def _answer(h: Handler, status: int, payload: Any, headers: dict[str, str]) -> None:
        if payload is None:
            data = b""
        elif isinstance(payload, bytes):
            data = payload
        else:
            data = json.dumps(payload).encode()
        try:
            h.send_response(status)
            if data:
                h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                h.send_header(name, value)
            h.end_headers()
            h.wfile.write(data)
            h.wfile.flush()
        except OSError:
            h.close_connection = True  # the client gave up waiting (a timeout test)

    def _route(self, r: Recorded) -> Any:
        path = r.path
        if path.startswith("/login/companyinfo/"):
            return self._cw_company_info(path.rsplit("/", 1)[1])
        if "/apis/3.0/" in path:
            return self._connectwise(r)
        if path.lower().startswith("/atservicesrest/"):
            return self._autotask(r)
        if path == "/auth/token":
            return self._halo_token(r)
        if path.startswith("/api/"):
            return self._halo(r)
        raise Reply(404, {"message": "no such route"})

    def _ticket(self, ticket_id: str, not_found: Any) -> dict:
        with self._lock:
            ticket = self.tickets.get(ticket_id)
        if ticket is None:
            raise Reply(404, not_found)
        return ticket

    def _store(self, ticket_id: str, note: dict) -> dict:
        with self._lock:
            note = {"id": self._next_id, **note}
            self._next_id += 1
            self._notes.setdefault(str(ticket_id), []).append(note)
            return dict(note)

    @staticmethod
    def _json_body(r: Recorded, invalid: Any) -> Any:
        try:
            return r.json()
        except ValueError:
            raise Reply(400, invalid) from None

    # -- ConnectWise -------------------------------------------------------

    def _cw_company_info(self, company: str) -> Any:
        if company.lower() != CW_COMPANY:
            raise Reply(404, {"code": "NotFound", "message": "Company not found"})
        return {
            "CompanyName": "Acme MSP", "Codebase": CW_CODEBASE, "VersionCode": "v2025.1",
            "VersionNumber": "v4.6.95000", "CompanyID": CW_COMPANY, "IsCloud": True,
        }

    def _connectwise(self, r: Recorded) -> Any:
        prefix = f"/{CW_CODEBASE}apis/3.0"
        if not r.path.startswith(prefix):
            raise Reply(404, {"code": "NotFound", "message": "Unknown codebase"})
        expected = base64.b64encode(
            f"{CW_COMPANY}+{CW_PUBLIC_KEY}:{CW_PRIVATE_KEY}".encode()
        ).decode()
        if r.headers.get("authorization") != f"Basic {expected}":
            raise Reply(401, {"code": "Unauthorized", "message": "Invalid credentials"})
        if r.headers.get("clientid") != CW_CLIENT_ID:
            raise Reply(401, {"code": "Unauthorized", "message": "clientId is required"})
        m = re.fullmatch(r"/service/tickets/(\d+)(/notes)?", r.path[len(prefix):])
        if m is None:
            raise Reply(404, {"code": "NotFound", "message": "Not found"})
        ticket_id, notes = m.group(1), bool(m.group(2))
        missing = {"code": "NotFound", "message": f"Ticket with id {ticket_id} was not found"}
        ticket = self._ticket(ticket_id, missing)
        if not notes and r.method == "GET":
            return ticket
        if notes and r.method == "GET":
            size = min(int(r.query.get("pageSize", ["25"])[0]), 1000)
            page = int(r.query.get("page", ["1"])[0])
            items = self.notes(ticket_id)
            return items[(page - 1) * size: page * size]
        if notes and r.method == "POST":
            invalid = {"code": "InvalidObject", "message": "ServiceNote object is invalid",
                       "errors": [{"code": "InvalidField", "message": "Body is not JSON"}]}
            body = self._json_body(r, invalid)
            errors = []
            text = body.get("text") if isinstance(body, dict) else None
            if not isinstance(text, str) or not text:
                errors.append({"code": "NullValue", "message": "text is required", "field": "text"})
            flags = ("detailDescriptionFlag", "internalAnalysisFlag", "resolutionFlag")
            if isinstance(body, dict) and not any(body.get(f) is True for f in flags):
                errors.append({"code": "InvalidField", "field": "internalAnalysisFlag",
                               "message": "One of detailDescriptionFlag, internalAnalysisFlag "
                                          "or resolutionFlag must be true"})
            if errors:
                raise Reply(400, {**invalid, "errors": errors})
            note = self._store(ticket_id, {
                "provider": "connectwise", "ticketId": int(ticket_id), "text": body["text"],
                **{f: bool(body.get(f)) for f in flags},
            })
            return 201, note
        raise Reply(405, {"code": "MethodNotAllowed", "message": "Method not allowed"})

    # -- Autotask ------------------------------------------------------------

    def _autotask(self, r: Recorded) -> Any:
        rest = r.path[len("/atservicesrest/"):]
        if rest.lower() == "v1.0/zoneinformation":
            users = {name.lower() for name in self.at_users}
            if r.query.get("user", [""])[0].lower() not in users:
                raise Reply(404, {"errors": ["Invalid user"]})
            return {"zoneName": "Local Zone", "url": f"{self.url}/atservicesrest/",
                    "webUrl": f"{self.url}/", "ci": 0}
        if r.headers.get("apiintegrationcode") != AT_INTEGRATION_CODE:
            raise Reply(500, {"errors": ["IntegrationCode is invalid."]})
        username = r.headers.get("username")
        if username not in self.at_users or r.headers.get("secret") != self.at_users[username]:
            raise Reply(401, {"errors": ["Unauthorized"]})
        m = re.fullmatch(r"v1\.0/tickets/(\d+)(/notes)?", rest, re.IGNORECASE)
        if m is None:
            raise Reply(404, {"errors": ["Not found"]})
        ticket_id, notes = m.group(1), bool(m.group(2))
        if not notes and r.method == "GET":
            with self._lock:
                return {"item": self.tickets.get(ticket_id)}
        self._ticket(ticket_id, {"errors": [f"Ticket {ticket_id} not found"]})
        if notes and r.method == "GET":
            page = int(r.query.get("page", ["1"])[0])
            size = self.at_page_size
            items = [{**n, "ticketID": int(ticket_id)} for n in self.notes(ticket_id)]
            more = len(items) > page * size
            next_url = f"{self.url}/atservicesrest/V1.0/Tickets/{ticket_id}/Notes?page={page + 1}"
            return {
                "items": items[(page - 1) * size: page * size],
                "pageDetails": {"count": len(items[(page - 1) * size: page * size]),
                                "requestCount": size, "prevPageUrl": None,
                                "nextPageUrl": next_url if more else None},
            }
        if notes and r.method == "POST":
            body = self._json_body(r, {"errors": ["The request body is not valid JSON."]})
            errors = []
            if not isinstance(body, dict):
                raise Reply(400, {"errors": ["The request body must be an object."]})
            if body.get("ticketID") != int(ticket_id):
                errors.append("ticketID must match the ticket in the URL.")
            if not isinstance(body.get("title"), str) or not 0 < len(body["title"]) <= 250:
                errors.append("title is required (1 to 250 characters).")
            if not isinstance(body.get("description"), str) or not 0 < len(
                body["description"]
            ) <= 32000:
                errors.append("description is required (1 to 32000 characters).")
            for key in ("noteType", "publish"):
                if not isinstance(body.get(key), int):
                    errors.append(f"{key} is required.")
            if errors:
                raise Reply(400, {"errors": errors})
            note = self._store(ticket_id, {
                "provider": "autotask", "title": body["title"],
                "description": body["description"], "text": body["description"],
                "noteType": body["noteType"], "publish": body["publish"],
            })
            return {"itemId": note["id"]}
        raise Reply(405, {"errors": ["Method not allowed"]})

    # -- HaloPSA ---------------------------------------------------------------

    def _halo_token(self, r: Recorded) -> Any:
        if r.method != "POST":
            raise Reply(405, {"error": "method_not_allowed"})
        if self.halo_tenant and r.query.get("tenant", [""])[0] != self.halo_tenant:
            raise Reply(400, {"error": "invalid_request", "error_description": "unknown tenant"})
        form = r.form()
        if form.get("grant_type") != "client_credentials" or form.get("scope") != "all":
            raise Reply(400, {"error": "unsupported_grant_type"})
        if (form.get("client_id") != HALO_CLIENT_ID
                or form.get("client_secret") != HALO_CLIENT_SECRET):
            raise Reply(400, {"error": "invalid_client"})
        token = "halo-token-" + secrets.token_hex(12)
        with self._lock:
            self._tokens[token] = time.monotonic() + self.halo_token_ttl
        return {"access_token": token, "token_type": "Bearer", "expires_in": self.halo_token_ttl}

    def _halo(self, r: Recorded) -> Any:
        auth = r.headers.get("authorization", "")
        token = auth[len("Bearer "):] if auth.startswith("Bearer ") else ""
        with self._lock:
            valid = self._tokens.get(token, 0) > time.monotonic()
        if not valid:
            raise Reply(401)
        missing = {"ClassName": "Halo.NotFound", "Message": "Ticket not found"}
        m = re.fullmatch(r"/api/Tickets/(\d+)", r.path)
        if m and r.method == "GET":
            return self._ticket(m.group(1), missing)
        if r.path != "/api/Actions":
            raise Reply(404, {"Message": "Not found"})
        if r.method == "GET":
            ticket_id = r.query.get("ticket_id", [""])[0]
            self._ticket(ticket_id, missing)
            actions = self.notes(ticket_id)
            return {"record_count": len(actions), "actions": actions}
        body = self._json_body(r, {"Message": "Invalid JSON"})
        required = {"ticket_id": int, "outcome": str, "hiddenfromuser": bool, "note_html": str}
        if not isinstance(body, list) or not body:
            raise Reply(400, {"Message": "The body must be an array of actions"})
        for item in body:
            if not isinstance(item, dict) or any(
                not isinstance(item.get(k), t) for k, t in required.items()
            ):
                raise Reply(400, {"Message": f"Each action needs {', '.join(required)}"})
            self._ticket(str(item["ticket_id"]), missing)
        created = []
        for item in body:
            plain = html.unescape(_TAG.sub("", item["note_html"].replace("<br>", "\n")))
            created.append(self._store(str(item["ticket_id"]), {
                "provider": "halopsa", "ticket_id": item["ticket_id"], "outcome": item["outcome"],
                "hiddenfromuser": item["hiddenfromuser"], "note_html": item["note_html"],
                "note": plain, "text": plain,
            }))
        return 201, (created[0] if len(created) == 1 else created)
