"""Fixtures for the PSA adapter tests: a loopback-only client, Redis, and delivering as the task
would (the local PSA server, `psa_server`, is tests/conftest.py's)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx
import pytest
import redis as redis_lib

from webapp.integrations.psa import PsaAdapter, PsaRetryable, write_note_once


def _loopback_only(request: httpx.Request) -> None:
    assert request.url.host in ("127.0.0.1", "localhost"), f"non-loopback request: {request.url}"


@pytest.fixture(autouse=True)
def no_halo_token_from_an_earlier_server():
    """A PSA server of an earlier test may have had this one's port: a Halo token the process
    cached for that one would be stale here (a 401 on the first request), and would change
    what a fault injected on that request means."""
    from webapp.integrations.psa import connectwise, halopsa
    with halopsa._local_lock:
        halopsa._local_tokens.clear()
    connectwise.forget_codebases()   # likewise a ConnectWise codebase discovered there


@pytest.fixture
def psa_http() -> Iterator[httpx.Client]:
    """An HTTP client that ignores proxy settings and refuses any non-loopback request."""
    with httpx.Client(trust_env=False, event_hooks={"request": [_loopback_only]}) as client:
        yield client


@dataclass
class PsaRedis:
    """The test Redis database, and the key patterns this test must remove when done."""

    client: redis_lib.Redis
    prefix: str
    patterns: list[str] = field(default_factory=list)

    def delete_after(self, pattern: str) -> None:
        """Remove keys matching pattern when the test ends."""
        self.patterns.append(pattern)


@pytest.fixture
def psa_redis(service_urls) -> Iterator[PsaRedis]:
    """Real Redis (logical db 15 of the run's server); only this test's keys are removed."""
    client = redis_lib.Redis.from_url(service_urls["REDIS_URL"].rsplit("/", 1)[0] + "/15")
    client.ping()
    handle = PsaRedis(client, f"psa-test:{uuid.uuid4().hex}:")
    handle.delete_after(handle.prefix + "*")
    yield handle
    for pattern in handle.patterns:
        keys = list(client.scan_iter(match=pattern, count=1000))
        if keys:
            client.delete(*keys)
    client.close()


Deliver = Callable[..., tuple[str, list[PsaRetryable]]]


@pytest.fixture
def psa_deliver() -> Deliver:
    """Run write_note_once as the task would: wait out retryable errors, then check first."""

    def deliver(
        adapter: PsaAdapter, ticket_id: str, marker: str, text: str, *, attempts: int = 5
    ) -> tuple[str, list[PsaRetryable]]:
        errors: list[PsaRetryable] = []
        for attempt in range(attempts):
            try:
                note = write_note_once(adapter, ticket_id, marker, text, check_first=attempt > 0)
                return note, errors
            except PsaRetryable as exc:
                errors.append(exc)
                time.sleep(exc.retry_after if exc.retry_after is not None else 0.05)
        raise AssertionError(f"not delivered after {attempts} attempts: {errors}")

    return deliver
