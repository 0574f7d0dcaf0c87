"""HaloPSA: private actions on tickets, with a cached client-credentials token."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import html
import threading
import time
from typing import Any

import httpx
import redis as redis_lib
from cryptography.fernet import Fernet, InvalidToken

from .base import (
    HttpPsaAdapter,
    PsaPermanent,
    base_url,
    iter_dicts,
    note_id,
    require_settings,
    text_to_html,
    ticket_number,
)
from .limits import MAX_WAIT, RequestSpacing, budget_key
from .settings import Setting, required

DEFAULT_OUTCOME = "Private Note"
MIN_INTERVAL = 1.0
# A token is dropped this long before Halo says it expires, so no call carries a dying one.
TOKEN_MARGIN = 60.0
TOKEN_PREFIX = "psa:token:halopsa:"

_local_lock = threading.Lock()
_local_tokens: dict[str, tuple[str, float]] = {}


class TokenCache:
    """Access tokens per Halo client, in Redis when given so every worker shares one. In
    Redis a token is sealed (Fernet) under a key derived from the client's own credentials:
    reading it takes what minting one takes anyway."""

    def __init__(self, key: str, redis: redis_lib.Redis | None, credentials: str = "") -> None:
        self.key = key
        self._redis = redis
        material = hashlib.sha256(b"halopsa token cache\n" + credentials.encode()).digest()
        self._seal = Fernet(base64.urlsafe_b64encode(material))

    def get(self) -> str | None:
        """The cached token, if it is still fresh."""
        if self._redis is not None:
            with contextlib.suppress(redis_lib.RedisError):
                value = self._redis.get(self.key)
                if value is None:
                    return None
                try:
                    return self._seal.decrypt(value).decode()
                except InvalidToken:   # sealed by other credentials, or not sealed
                    return None
        with _local_lock:
            token, expires = _local_tokens.get(self.key, ("", 0.0))
        return token if token and expires > time.monotonic() else None

    def put(self, token: str, ttl: float) -> None:
        """Keep token for ttl seconds."""
        if ttl <= 0:
            return
        if self._redis is not None:
            with contextlib.suppress(redis_lib.RedisError):
                self._redis.set(self.key, self._seal.encrypt(token.encode()),
                                px=int(ttl * 1000))
                return
        with _local_lock:
            _local_tokens[self.key] = (token, time.monotonic() + ttl)

    def drop(self, token: str) -> None:
        """Forget token, unless another worker has already replaced it."""
        if self._redis is not None:
            with contextlib.suppress(redis_lib.RedisError):
                if self.get() == token:
                    self._redis.delete(self.key)
                return
        with _local_lock:
            if _local_tokens.get(self.key, ("",))[0] == token:
                del _local_tokens[self.key]


class HaloPsaAdapter(HttpPsaAdapter):
    """Private notes (actions) on HaloPSA tickets."""

    provider = "halopsa"
    name = "HaloPSA"
    settings = (
        Setting("base_url", required=True, url=True, max_length=2000),
        Setting("client_id", required=True),
        Setting("client_secret", required=True, secret=True, max_length=500),
        Setting("tenant"),
        Setting("note_outcome", max_length=100),
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
        self._base = base_url(settings["base_url"], "base_url", self.provider)
        self._client_id = settings["client_id"].strip()
        self._client_secret = settings["client_secret"].strip()
        tenant = settings.get("tenant")
        self._tenant = tenant.strip() if isinstance(tenant, str) and tenant.strip() else None
        outcome = settings.get("note_outcome")
        self._outcome = (outcome if isinstance(outcome, str) else "").strip() or DEFAULT_OUTCOME
        identity = (self._base, self._tenant or "", self._client_id, self._client_secret)
        digest = hashlib.sha256("\n".join(identity).encode()).hexdigest()[:32]
        self._tokens = TokenCache(f"{TOKEN_PREFIX}{self._base}:{digest}", redis,
                                  credentials="\n".join(identity))
        self._spacing = RequestSpacing(
            budget_key(self.provider, self._base),
            float(settings.get("min_interval", MIN_INTERVAL)),
            redis=redis,
            max_wait=min(float(settings.get("rate_wait", MAX_WAIT)), MAX_WAIT),
            label=self.name,
        )
        super().__init__(http, timeout)
        self._keep_secret(self._client_secret)

    def add_note(self, ticket_id: str, text: str) -> str:
        """Post a private note action (text escaped into HTML) and return its id."""
        number = ticket_number(ticket_id, self.name)
        action = {
            "ticket_id": number,
            "outcome": self._outcome,
            "hiddenfromuser": True,
            "note_html": text_to_html(text),
        }
        response = self._api("POST", "/api/Actions", write=True, ticket_id=number, json=[action])
        answer = self._json(response, write=True)
        if isinstance(answer, list):
            answer = next(iter_dicts(answer), None)
        return note_id(answer, self.name, "id")

    def find_note_by_marker(self, ticket_id: str, marker: str) -> str | None:
        """Search the ticket's actions for one whose note holds marker."""
        number = ticket_number(ticket_id, self.name)
        response = self._api("GET", "/api/Actions", ticket_id=number, params={"ticket_id": number})
        body = self._json(response)
        actions = body.get("actions") if isinstance(body, dict) else body
        for action in iter_dicts(actions):
            note = str(action.get("note") or "")
            note_html = html.unescape(str(action.get("note_html") or ""))
            if marker in note or marker in note_html:
                return str(action.get("id"))
        return None

    def get_ticket(self, ticket_id: str) -> dict:
        """Return the ticket."""
        number = ticket_number(ticket_id, self.name)
        response = self._api("GET", f"/api/Tickets/{number}", ticket_id=number)
        ticket = self._json(response)
        if not isinstance(ticket, dict):
            raise PsaPermanent(f"{self.name}: unreadable answer for ticket {number}")
        return ticket

    def _budget(self, url: str) -> contextlib.AbstractContextManager:
        """Hosted Halo allows about 300 requests per 5 minutes: about one a second."""
        return self._spacing.hold()

    def _api(
        self, method: str, path: str, *, write: bool = False, ticket_id: int, **kwargs: Any
    ) -> httpx.Response:
        """Call the API with the cached token; on 401 fetch a new token and try once more."""
        token = self._token()
        response = self._call(method, path, token, write, **kwargs)
        if response.status_code == 401:
            # A 401 means the request was refused before anything was written.
            self._tokens.drop(token)
            response = self._call(method, path, self._token(), write, **kwargs)
        self._check(response, write=write, ticket_id=ticket_id)
        return response

    def _call(
        self, method: str, path: str, token: str, write: bool, **kwargs: Any
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        return self._send(method, f"{self._base}{path}", write=write, headers=headers, **kwargs)

    def _token(self) -> str:
        token = self._tokens.get()
        if token is None:
            token, ttl = self._fetch_token()
            self._tokens.put(token, ttl)
        self._keep_secret(token)
        return token

    def _fetch_token(self) -> tuple[str, float]:
        """Client-credentials grant; returns the token and how long to keep it."""
        response = self._send(
            "POST",
            f"{self._base}/auth/token",
            params={"tenant": self._tenant} if self._tenant else None,
            data={
                "grant_type": "client_credentials",
                "client_id": self._client_id,
                "client_secret": self._client_secret,
                "scope": "all",
            },
            headers={"Accept": "application/json"},
        )
        if response.status_code in (400, 401, 403):
            raise PsaPermanent(
                f"{self.name}: authentication failed (token request refused, "
                f"{response.status_code}; check client_id and client_secret)"
            )
        self._check(response)
        body = self._json(response)
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise PsaPermanent(f"{self.name}: the token answer carries no access_token")
        try:
            expires_in = float(body.get("expires_in") or 0)
        except (TypeError, ValueError):
            expires_in = 0.0
        ttl = expires_in - TOKEN_MARGIN if expires_in > 2 * TOKEN_MARGIN else expires_in / 2
        return token, ttl
