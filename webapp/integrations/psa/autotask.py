"""Autotask: ticket notes through the REST API, within its per-endpoint thread limit."""

from __future__ import annotations

import contextlib
import hashlib
import re
from typing import Any
from urllib.parse import urlsplit

import httpx

from .base import (
    HttpPsaAdapter,
    PsaPermanent,
    base_url,
    note_id,
    require_settings,
    ticket_number,
)
from .limits import MAX_WAIT, ConcurrencyLimit, budget_key
from .settings import Setting, required

ZONE_LOOKUP_URL = "https://webservices.autotask.net/atservicesrest/v1.0/zoneInformation"
MAX_CONCURRENT = 3
MAX_PAGES = 50
TITLE = "Escalation handoff"
# Autotask answers some authentication failures with a 500 and says so only in the body.
_AUTH_MESSAGE = re.compile(
    r"authenticat|integration ?code|unauthori[sz]ed|not authorized|credential|api ?user",
    re.IGNORECASE,
)
_ID_SEGMENT = re.compile(r"/\d+(?=/|$)")


def concurrency_key(zone: str, username: str, template: str) -> str:
    """The budget key of one endpoint of one database. Many MSPs share a zone; an API user
    belongs to one database, so a digest of its name (never the name) stands for it."""
    database = hashlib.sha256(username.strip().lower().encode()).hexdigest()[:16]
    return budget_key(AutotaskAdapter.provider, zone, database, template.lower())


class AutotaskAdapter(HttpPsaAdapter):
    """Notes on Autotask tickets."""

    provider = "autotask"
    name = "Autotask"
    settings = (
        Setting("username", required=True, max_length=320),
        Setting("secret", required=True, secret=True, max_length=500),
        Setting("integration_code", required=True, secret=True),
        Setting("zone_url", url=True, max_length=2000),
        Setting("zone_lookup_url", url=True, max_length=2000),
    )
    max_note_length = 32000

    def __init__(
        self,
        settings: dict,
        *,
        http: httpx.Client | None = None,
        redis: Any = None,
        timeout: float = 10.0,
    ) -> None:
        require_settings(self.provider, settings, required(self.settings))
        self._username = settings["username"].strip()
        secret = settings["secret"].strip()
        integration_code = settings["integration_code"].strip()
        self._headers = {
            "ApiIntegrationCode": integration_code,
            "UserName": self._username,
            "Secret": secret,
            "Accept": "application/json",
        }
        zone = settings.get("zone_url")
        self._zone = self._zone_url(zone, "zone_url") if zone else None
        self._zone_lookup = base_url(
            settings.get("zone_lookup_url") or ZONE_LOOKUP_URL, "zone_lookup_url", self.provider
        )
        self._note_type = int(settings.get("note_type", 1))
        self._publish = int(settings.get("note_publish", 1))
        self._redis = redis
        self._max_concurrent = int(settings.get("max_concurrent", MAX_CONCURRENT))
        self._rate_wait = min(float(settings.get("rate_wait", MAX_WAIT)), MAX_WAIT)
        self._limits: dict[str, ConcurrencyLimit] = {}
        super().__init__(http, timeout)
        self._keep_secret(secret, integration_code)

    def add_note(self, ticket_id: str, text: str) -> str:
        """Post a ticket note (plain text, sent as written) and return its itemId."""
        number = ticket_number(ticket_id, self.name)
        response = self._send(
            "POST",
            f"{self._base()}V1.0/Tickets/{number}/Notes",
            write=True,
            headers=self._headers,
            json={
                "ticketID": number,
                "title": TITLE,
                "description": text[: self.max_note_length],
                "noteType": self._note_type,
                "publish": self._publish,
            },
        )
        self._check(response, write=True, ticket_id=number)
        return note_id(self._json(response, write=True), self.name, "itemId", "id")

    def find_note_by_marker(self, ticket_id: str, marker: str) -> str | None:
        """Walk the ticket's notes, page by page, for one whose description holds marker."""
        number = ticket_number(ticket_id, self.name)
        zone = self._base()
        url: str | None = f"{zone}V1.0/Tickets/{number}/Notes"
        for _ in range(MAX_PAGES):
            if url is None:
                return None
            response = self._send("GET", url, headers=self._headers)
            self._check(response, ticket_id=number)
            body = self._json(response)
            if not isinstance(body, dict):
                return None
            for note in body.get("items") or []:
                if isinstance(note, dict) and marker in str(note.get("description") or ""):
                    return str(note.get("id"))
            next_url = (body.get("pageDetails") or {}).get("nextPageUrl")
            # Credentials go only where the zone is; a next page elsewhere is not followed.
            url = next_url if isinstance(next_url, str) and next_url.startswith(zone) else None
        return None

    def get_ticket(self, ticket_id: str) -> dict:
        """Return the ticket (Autotask answers an unknown id with item null)."""
        number = ticket_number(ticket_id, self.name)
        response = self._send("GET", f"{self._base()}V1.0/Tickets/{number}", headers=self._headers)
        self._check(response, ticket_id=number)
        body = self._json(response)
        item = body.get("item") if isinstance(body, dict) else None
        if not isinstance(item, dict):
            raise PsaPermanent(f"{self.name}: ticket {number} not found")
        return item

    def _is_auth_failure(self, response: httpx.Response, message: str) -> bool:
        return response.status_code == 500 and bool(_AUTH_MESSAGE.search(message))

    def _budget(self, url: str) -> contextlib.AbstractContextManager:
        """Autotask allows three concurrent requests per endpoint of each customer database."""
        zone = self._zone
        if zone is None or not url.startswith(zone):
            return contextlib.nullcontext()
        template = _ID_SEGMENT.sub("/{id}", urlsplit(url).path[len(urlsplit(zone).path):])
        limit = self._limits.get(template)
        if limit is None:
            limit = self._limits[template] = ConcurrencyLimit(
                concurrency_key(zone, self._username, template),
                self._max_concurrent,
                redis=self._redis,
                max_wait=self._rate_wait,
                label=self.name,
            )
        return limit.hold()

    def _base(self) -> str:
        if self._zone is None:
            self._zone = self._discover_zone()
        return self._zone

    def _zone_url(self, value: str, name: str) -> str:
        return base_url(value, name, self.provider) + "/"

    def _discover_zone(self) -> str:
        """Ask Autotask which zone serves this API user's database."""
        response = self._send(
            "GET",
            self._zone_lookup,
            params={"user": self._username},
            headers={"Accept": "application/json"},
        )
        no_zone = PsaPermanent(f"{self.name}: no zone found for the API user")
        if response.status_code == 404:
            raise no_zone
        self._check(response)
        info = self._json(response)
        url = info.get("url") if isinstance(info, dict) else None
        if not isinstance(url, str) or not url.strip():
            raise no_zone
        return self._zone_url(url, "zone url")
