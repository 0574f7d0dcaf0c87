"""ConnectWise Manage: internal-analysis notes on service tickets through REST API 3.0."""

from __future__ import annotations

import base64
import re
import threading
import time
from typing import Any
from urllib.parse import quote

import httpx

from .base import (
    HttpPsaAdapter,
    PsaPermanent,
    base_url,
    iter_dicts,
    note_id,
    require_settings,
    ticket_number,
)
from .settings import Setting, required

PAGE_SIZE = 1000
MAX_PAGES = 50
_CODEBASE = re.compile(r"[A-Za-z0-9_.-]+")

# The codebase a site serves a company from, as discovered, for a while: asking before every
# note doubled each push's requests. It moves on upgrades: an entry lives a few minutes, and
# a 404 through a remembered one forgets it, so the next attempt asks again.
CODEBASE_TTL_SECONDS = 300.0
_codebases: dict[tuple[str, str], tuple[str, float]] = {}
_codebases_lock = threading.Lock()


def forget_codebases() -> None:
    """Forget every discovered codebase (this process's)."""
    with _codebases_lock:
        _codebases.clear()


class ConnectWiseAdapter(HttpPsaAdapter):
    """Notes on ConnectWise Manage service tickets."""

    provider = "connectwise"
    name = "ConnectWise"
    settings = (
        Setting("site_url", required=True, url=True, max_length=2000),
        Setting("company_id", required=True, max_length=100),
        Setting("public_key", required=True, secret=True),
        Setting("private_key", required=True, secret=True),
        Setting("client_id", required=True),
        Setting("codebase", pattern=r"^[A-Za-z0-9_.\-]+/$"),
    )

    def __init__(
        self,
        settings: dict,
        *,
        http: httpx.Client | None = None,
        redis: Any = None,
        timeout: float = 10.0,
    ) -> None:
        require_settings(self.provider, settings, required(self.settings))
        self._site = base_url(settings["site_url"], "site_url", self.provider)
        self._company = settings["company_id"].strip()
        public_key = settings["public_key"].strip()
        private_key = settings["private_key"].strip()
        credentials = base64.b64encode(
            f"{self._company}+{public_key}:{private_key}".encode()
        ).decode()
        self._headers = {
            "Authorization": f"Basic {credentials}",
            "clientId": settings["client_id"].strip(),
            "Accept": "application/json",
        }
        codebase = settings.get("codebase")
        self._api = self._api_url(codebase) if codebase else None
        self._remembered = False   # whether _api came from the discovered codebases
        super().__init__(http, timeout)
        self._keep_secret(private_key, credentials)

    def add_note(self, ticket_id: str, text: str) -> str:
        """Post an internal-analysis note (plain text, sent as written) and return its id."""
        number = ticket_number(ticket_id, self.name)
        response = self._send(
            "POST",
            f"{self._base()}/service/tickets/{number}/notes",
            write=True,
            headers=self._headers,
            json={"text": text, "internalAnalysisFlag": True},
        )
        self._check(response, write=True, ticket_id=number)
        return note_id(self._json(response, write=True), self.name, "id")

    def find_note_by_marker(self, ticket_id: str, marker: str) -> str | None:
        """Scan the ticket's notes, page by page, for one whose text holds marker."""
        number = ticket_number(ticket_id, self.name)
        url = f"{self._base()}/service/tickets/{number}/notes"
        for page in range(1, MAX_PAGES + 1):
            response = self._send(
                "GET",
                url,
                headers=self._headers,
                params={"page": page, "pageSize": PAGE_SIZE, "fields": "id,text"},
            )
            self._check(response, ticket_id=number)
            notes = self._json(response)
            for note in iter_dicts(notes):
                if marker in str(note.get("text") or ""):
                    return str(note.get("id"))
            if not isinstance(notes, list) or len(notes) < PAGE_SIZE:
                return None
        return None

    def get_ticket(self, ticket_id: str) -> dict:
        """Return the service ticket."""
        number = ticket_number(ticket_id, self.name)
        response = self._send(
            "GET", f"{self._base()}/service/tickets/{number}", headers=self._headers
        )
        self._check(response, ticket_id=number)
        ticket = self._json(response)
        if not isinstance(ticket, dict):
            raise PsaPermanent(f"{self.name}: unreadable answer for ticket {number}")
        return ticket

    def _base(self) -> str:
        if self._api is None:
            key = (self._site, self._company.lower())
            with _codebases_lock:
                codebase, until = _codebases.get(key, (None, 0.0))
            if codebase is not None and until > time.monotonic():
                self._remembered = True
            else:
                codebase = self._discover_codebase()
                with _codebases_lock:
                    _codebases[key] = (codebase, time.monotonic() + CODEBASE_TTL_SECONDS)
            self._api = self._api_url(codebase)
        return self._api

    def _check(self, response: httpx.Response, *, write: bool = False,
               ticket_id: Any = None) -> None:
        if response.status_code == 404 and self._remembered:
            with _codebases_lock:   # the codebase may have moved: the next attempt asks
                _codebases.pop((self._site, self._company.lower()), None)
        super()._check(response, write=write, ticket_id=ticket_id)

    def _api_url(self, codebase: str) -> str:
        codebase = codebase.strip().strip("/")
        if not _CODEBASE.fullmatch(codebase):
            raise PsaPermanent(f"{self.name}: the codebase is not valid")
        return f"{self._site}/{codebase}/apis/3.0"

    def _discover_codebase(self) -> str:
        """Ask the site which release path serves this company (it moves on upgrades)."""
        response = self._send(
            "GET",
            f"{self._site}/login/companyinfo/{quote(self._company, safe='')}",
            headers={"Accept": "application/json"},
        )
        not_found = PsaPermanent(
            f"{self.name}: company {self._company!r} not found at the configured site_url"
        )
        if response.status_code == 404:
            raise not_found
        self._check(response)
        info = self._json(response)
        codebase = info.get("Codebase") if isinstance(info, dict) else None
        if not isinstance(codebase, str) or not codebase.strip():
            raise not_found
        return codebase
