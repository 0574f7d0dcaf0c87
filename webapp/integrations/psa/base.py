"""What every PSA adapter shares: errors, the adapter contract, HTTP error classification."""

from __future__ import annotations

import abc
import contextlib
import email.utils
import html
import math
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from webapp.integrations import outbound

MAX_REASON = 300


class PsaError(Exception):
    """A PSA call failed; `reason` is short, readable and free of secrets."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PsaRetryable(PsaError):
    """Trying again later may succeed; `retry_after` is the PSA's own wait hint in seconds."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class PsaAmbiguous(PsaRetryable):
    """The write was sent but its answer was lost: it may have happened."""


class PsaBusy(PsaRetryable):
    """The PSA's rate budget has no turn for this request soon enough to wait for in a worker
    thread; nothing was sent, so try again in about `retry_after` seconds."""

    def __init__(self, reason: str, retry_after: float) -> None:
        super().__init__(reason, retry_after=retry_after)


class PsaPermanent(PsaError):
    """Trying again will not help: bad input, bad credentials, missing ticket, bad config."""


class PsaAdapter(abc.ABC):
    """One PSA account: write a note on a ticket, find a note by its marker, read a ticket."""

    provider: str
    # The longest note text the PSA accepts, or None when it states no limit.
    max_note_length: int | None = None

    @abc.abstractmethod
    def add_note(self, ticket_id: str, text: str) -> str:
        """Post an internal note on the ticket and return the PSA's note id."""

    @abc.abstractmethod
    def find_note_by_marker(self, ticket_id: str, marker: str) -> str | None:
        """Return the id of a note on the ticket whose text contains marker, if any."""

    @abc.abstractmethod
    def get_ticket(self, ticket_id: str) -> dict:
        """Return the ticket as the PSA describes it."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the HTTP connections this adapter opened."""

    def __enter__(self) -> PsaAdapter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def note_marker(handoff_id: Any, nonce: str | None = None) -> str:
    """The marker a handoff's note carries, so a lost answer can be reconciled by search. Its
    random nonce keeps a note someone typed (quoting an id) from passing for the real one;
    handoffs from before nonces have none."""
    return f"[escalation-handoff:{handoff_id}:{nonce}]" if nonce else \
        f"[escalation-handoff:{handoff_id}]"


def write_note_once(
    adapter: PsaAdapter, ticket_id: str, marker: str, text: str, *, check_first: bool
) -> str:
    """Write the note unless a note with marker is already there; return the note id."""
    if marker not in text:
        raise ValueError("the note text must contain its marker")
    text = fit_note(text, marker, adapter.max_note_length)
    if check_first:
        found = adapter.find_note_by_marker(ticket_id, marker)
        if found is not None:
            return found
    try:
        return adapter.add_note(ticket_id, text)
    except PsaAmbiguous as ambiguous:
        try:
            found = adapter.find_note_by_marker(ticket_id, marker)
        except PsaError:
            raise ambiguous from None
        if found is None:
            raise
        return found


def fit_note(text: str, marker: str, limit: int | None) -> str:
    """Shorten text to limit characters without losing the marker."""
    if limit is None or len(text) <= limit:
        return text
    ellipsis = "\n…"
    cut = text[: limit - len(ellipsis)] + ellipsis
    if marker in cut:
        return cut
    tail = f"{ellipsis}\n{marker}"
    return text[: limit - len(tail)] + tail


MAX_RETRY_AFTER_SECONDS = 3600.0


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date), at most an
    hour: a PSA that asks for a week must not park the note for a week."""
    seconds = _retry_after_seconds(value)
    return None if seconds is None else min(seconds, MAX_RETRY_AFTER_SECONDS)


def _retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def text_to_html(text: str) -> str:
    """HTML that shows text as written, line breaks included."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return html.escape(text, quote=False).replace("\n", "<br>")


def ticket_number(ticket_id: Any, provider_name: str) -> int:
    """The ticket id as the integer every PSA expects, or PsaPermanent."""
    value = str(ticket_id).strip()
    if not value.isascii() or not value.isdigit() or len(value) > 18:
        raise PsaPermanent(f"{provider_name}: ticket id must be a number")
    return int(value)


def require_settings(provider: str, settings: dict, names: Iterable[str]) -> None:
    """Raise PsaPermanent naming (never showing) the settings that are missing."""
    missing = [
        name for name in names
        if not isinstance(settings.get(name), str) or not settings[name].strip()
    ]
    if missing:
        raise PsaPermanent(f"{provider} settings missing: {', '.join(missing)}")


def base_url(value: str, name: str, provider: str) -> str:
    """An http(s) URL without trailing slash; a bare host gets https://."""
    value = value.strip()
    if "://" not in value:
        value = "https://" + value
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username:
        raise PsaPermanent(f"{provider} setting {name} is not a valid http(s) URL")
    return value.rstrip("/")


def psa_message(response: httpx.Response) -> str:
    """The human message in a PSA error body, whichever of the usual shapes it has."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        # An HTML error page says nothing useful in a reason.
        return "" if text.startswith("<") else text[:200]
    parts: list[str] = []

    def collect(value: Any) -> None:
        if isinstance(value, str) and value.strip():
            parts.append(value.strip())
        elif isinstance(value, dict):
            for key in ("message", "Message", "error_description", "error", "title", "detail"):
                if key in value:
                    collect(value[key])
                    break
            collect(value.get("errors"))
        elif isinstance(value, list):
            for item in value[:3]:
                collect(item)

    collect(body)
    seen: list[str] = []
    for part in parts:
        if part not in seen:
            seen.append(part)
    return "; ".join(seen)


class HttpPsaAdapter(PsaAdapter):
    """An adapter over a JSON HTTP API: sending, rate budgets and error classification."""

    name: str  # how reasons name the PSA

    # the most bytes of an answer that are read; a longer one is abandoned
    max_response_bytes: int = outbound.DEFAULT_MAX_RESPONSE_BYTES

    def __init__(self, http: httpx.Client | None, timeout: float) -> None:
        self._own_http = http is None
        self._http = http if http is not None else outbound.client(allow_private=False)
        # `timeout` bounds each whole request (connect to last byte), not each read
        self._deadline = timeout
        self._timeout = httpx.Timeout(timeout)
        self._secrets: list[str] = []

    def close(self) -> None:
        """Close the HTTP client if this adapter created it."""
        if self._own_http:
            self._http.close()

    def _keep_secret(self, *values: str | None) -> None:
        self._secrets.extend(v for v in values if v and len(v) >= 4)

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text[:MAX_REASON]

    def _budget(self, url: str) -> contextlib.AbstractContextManager:
        """Hold the PSA's rate budget around one request (none by default)."""
        return contextlib.nullcontext()

    def _is_auth_failure(self, response: httpx.Response, message: str) -> bool:
        """Whether a 5xx answer really is an authentication failure."""
        return False

    def _send(
        self, method: str, url: str, *, write: bool = False, **kwargs: Any
    ) -> httpx.Response:
        """Send one request under the rate budget; transport failures become PsaErrors."""
        with self._budget(url):
            try:
                return outbound.send(self._http, method, url, deadline=self._deadline,
                                     max_bytes=self.max_response_bytes,
                                     timeout=self._timeout, **kwargs)
            except httpx.RequestError as exc:
                failure = outbound.unsent(exc, "the configured URL", "the configured host")
                if failure is None:
                    raise self._unanswered(exc, write) from exc
                # nothing reached the PSA, so even a write is safe to repeat
                raise (PsaPermanent if failure.permanent else PsaRetryable)(
                    f"{self.name}: {failure.reason}") from exc

    def _unanswered(self, exc: httpx.RequestError, write: bool) -> PsaError:
        """The error for a request that may have reached the PSA: a write may be applied."""
        if isinstance(exc, outbound.DeadlineExceeded):
            what = "the write" if write else "the request"
            reason = f"{self.name}: no complete answer to {what} within {self._deadline:g}s"
            return PsaAmbiguous(reason + "; it may have been applied") if write \
                else PsaRetryable(reason)
        if isinstance(exc, outbound.ResponseTooLarge):
            reason = f"{self.name}: answer larger than {self.max_response_bytes} bytes, not read"
            return PsaAmbiguous(reason + "; the write may have been applied") if write \
                else PsaRetryable(reason)
        if write:
            return PsaAmbiguous(f"{self.name}: no answer to the write ({type(exc).__name__}); "
                                "it may have been applied")
        return PsaRetryable(f"{self.name}: no answer ({type(exc).__name__})")

    def _check(
        self, response: httpx.Response, *, write: bool = False, ticket_id: Any = None
    ) -> None:
        """Raise the PsaError an unsuccessful answer stands for."""
        status = response.status_code
        if 200 <= status < 300:
            return
        message = self._redact(psa_message(response))
        detail = f": {message}" if message else ""
        if status == 429:
            raise PsaRetryable(
                f"{self.name}: rate limited (429)",
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
            )
        auth_failed = self._redact(f"{self.name}: authentication failed ({status}){detail}")
        if status in (401, 403):
            raise PsaPermanent(auth_failed)
        if status == 404:
            if ticket_id is not None:
                raise PsaPermanent(f"{self.name}: ticket {ticket_id} not found")
            raise PsaPermanent(f"{self.name}: not found (404); check the configured URL")
        if status == 408:
            raise PsaRetryable(f"{self.name}: request timed out (408)")
        if 300 <= status < 400:
            raise PsaPermanent(
                f"{self.name}: unexpected redirect ({status}); check the configured URL"
            )
        if status < 500:
            raise PsaPermanent(self._redact(f"{self.name}: rejected ({status}){detail}"))
        if self._is_auth_failure(response, message):
            raise PsaPermanent(auth_failed)
        reason = self._redact(f"{self.name}: server error ({status}){detail}")
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        # A 503 is refused at the door; other 5xx on a write (a gateway that
        # timed out, a crash after the insert) may follow a completed write.
        if write and status != 503:
            raise PsaAmbiguous(reason, retry_after=retry_after)
        raise PsaRetryable(reason, retry_after=retry_after)

    def _json(self, response: httpx.Response, *, write: bool = False) -> Any:
        """The answer's JSON body; an unreadable one after a write may hide a done write."""
        try:
            return response.json()
        except ValueError:
            if write:
                raise PsaAmbiguous(
                    f"{self.name}: unreadable answer to the write ({response.status_code})"
                ) from None
            raise PsaPermanent(
                f"{self.name}: unreadable answer ({response.status_code}); check the configured URL"
            ) from None


def note_id(value: Any, provider_name: str, *keys: str) -> str:
    """The id in a PSA's answer to a note write, as a string."""
    for key in keys:
        if isinstance(value, dict) and value.get(key) not in (None, ""):
            return str(value[key])
    raise PsaAmbiguous(f"{provider_name}: the answer to the note write carries no id")


def iter_dicts(value: Any) -> Iterator[dict]:
    """The dict items of a list answer, skipping anything else."""
    if isinstance(value, list):
        yield from (item for item in value if isinstance(item, dict))
