"""Rate budgets: concurrency limits and request spacing, in-process and over real Redis."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import redis as redis_lib
from redis.backoff import NoBackoff
from redis.retry import Retry

from webapp.integrations.psa import PsaRetryable
from webapp.integrations.psa.limits import ConcurrencyLimit, RequestSpacing


def _run_concurrently(limits: list[ConcurrencyLimit], count: int, on_enter=None) -> int:
    """Run count holders across the limits; return the most that were inside at once."""
    lock = threading.Lock()
    inside = 0
    most = 0
    errors: list[BaseException] = []

    def work(i: int) -> None:
        nonlocal inside, most
        try:
            with limits[i % len(limits)].hold():
                with lock:
                    inside += 1
                    most = max(most, inside)
                if on_enter:
                    on_enter()
                time.sleep(0.05)
                with lock:
                    inside -= 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert errors == []
    return most


def test_in_process_limit_admits_exactly_three_at_once(psa_redis):
    key = psa_redis.prefix + "in-process"

    assert _run_concurrently([ConcurrencyLimit(key, 3)], 10) == 3


def test_redis_limit_is_shared_by_separate_limiters(psa_redis):
    key = psa_redis.prefix + "shared"
    limits = [ConcurrencyLimit(key, 3, redis=psa_redis.client) for _ in range(3)]
    holders: list[int] = []

    most = _run_concurrently(limits, 10, lambda: holders.append(psa_redis.client.zcard(key)))

    assert most == 3
    assert max(holders) == 3
    assert psa_redis.client.zcard(key) == 0


def test_a_holder_that_died_frees_its_slot_when_the_lease_ends(psa_redis):
    key = psa_redis.prefix + "lease"
    crashed = ConcurrencyLimit(key, 1, redis=psa_redis.client, lease=0.4).hold()
    crashed.__enter__()  # and never leaves, as a killed worker would
    assert 0 < psa_redis.client.pttl(key) <= 400

    started = time.monotonic()
    with ConcurrencyLimit(key, 1, redis=psa_redis.client, max_wait=3).hold():
        waited = time.monotonic() - started

    assert 0.2 <= waited <= 1.5


def test_limit_gives_up_after_max_wait_with_a_retryable_error(psa_redis):
    key = psa_redis.prefix + "exhausted"
    for redis in (None, psa_redis.client):
        with ConcurrencyLimit(key, 1, redis=redis).hold():
            started = time.monotonic()
            with (
                pytest.raises(PsaRetryable, match="rate budget exhausted"),
                ConcurrencyLimit(key, 1, redis=redis, max_wait=0.2).hold(),
            ):
                pass
            assert 0.15 <= time.monotonic() - started <= 1.0


def test_limit_falls_back_to_in_process_when_redis_is_down(psa_redis):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    down = redis_lib.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.2,
                           retry=Retry(NoBackoff(), 0))
    key = psa_redis.prefix + "down"

    assert _run_concurrently([ConcurrencyLimit(key, 3, redis=down)], 8) == 3


def _spaced_times(spacings: list[RequestSpacing], count: int) -> list[float]:
    times: list[float] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        spacings[i % len(spacings)].wait()
        with lock:
            times.append(time.monotonic())

    threads = [threading.Thread(target=work, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    return sorted(times)


def test_in_process_spacing_keeps_requests_an_interval_apart(psa_redis):
    times = _spaced_times([RequestSpacing(psa_redis.prefix + "space", 0.2)], 4)

    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert len(times) == 4 and all(0.18 <= gap <= 0.5 for gap in gaps), gaps


def test_redis_spacing_is_shared_by_separate_spacers(psa_redis):
    key = psa_redis.prefix + "shared-space"
    spacings = [RequestSpacing(key, 0.2, redis=psa_redis.client) for _ in range(3)]

    times = _spaced_times(spacings, 5)

    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert len(times) == 5 and all(0.17 <= gap <= 0.5 for gap in gaps), gaps
    assert psa_redis.client.pttl(key) > 0


def test_spacing_refuses_a_turn_further_away_than_max_wait(psa_redis):
    for redis in (None, psa_redis.client):
        spacing = RequestSpacing(psa_redis.prefix + f"far-{redis is None}", 1.0, redis=redis,
                                 max_wait=0.5)
        spacing.wait()
        started = time.monotonic()
        with pytest.raises(PsaRetryable, match="rate budget exhausted") as caught:
            spacing.wait()
        assert time.monotonic() - started < 0.2
        assert 0.8 <= caught.value.retry_after <= 1.0
