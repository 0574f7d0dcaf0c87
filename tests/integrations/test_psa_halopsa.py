"""HaloPSA adapter against the local PSA server."""

from __future__ import annotations

import threading
import time

import pytest

from tests.servers.psa import HALO_CLIENT_ID, HALO_CLIENT_SECRET, PsaServer
from webapp.integrations.psa import (
    PsaAmbiguous,
    PsaBusy,
    PsaPermanent,
    PsaRetryable,
    build_adapter,
    note_marker,
    write_note_once,
)

ACTIONS = "/api/Actions"
TOKEN = "/auth/token"


def adapter(server, http, timeout: float = 5.0, redis=None, **overrides):
    # Spacing is tested on its own; elsewhere it would only slow the tests down.
    settings = server.settings("halopsa", **{"min_interval": 0, **overrides})
    return build_adapter("halopsa", settings, http=http, redis=redis, timeout=timeout)


def test_note_is_a_private_action_posted_as_an_array_with_a_bearer_token(psa_server, psa_http):
    marker = note_marker(61)
    text = f"Escalated: <script>alert(1)</script> & more\nline two\n{marker}"

    note_id = write_note_once(adapter(psa_server, psa_http), "1001", marker, text,
                              check_first=True)

    [note] = psa_server.notes("1001")
    assert note_id == str(note["id"])
    [token_request] = psa_server.requests_to("POST", TOKEN)
    assert token_request.form() == {"grant_type": "client_credentials", "scope": "all",
                                    "client_id": HALO_CLIENT_ID,
                                    "client_secret": HALO_CLIENT_SECRET}
    assert token_request.query == {}
    [post] = psa_server.requests_to("POST", ACTIONS)
    assert post.headers["authorization"].startswith("Bearer halo-token-")
    assert post.json() == [{
        "ticket_id": 1001,
        "outcome": "Private Note",
        "hiddenfromuser": True,
        "note_html": "Escalated: &lt;script&gt;alert(1)&lt;/script&gt; &amp; more<br>line two<br>"
                     f"{marker}",
    }]
    assert note["note"] == text
    assert psa_server.notes("1002") == []


def test_plain_text_that_looks_like_markup_is_escaped_into_the_html_note(psa_server, psa_http):
    text = ("Run Set-Mailbox -Identity <UserPrincipalName> with <Enabled>true</Enabled>\n"
            "the log said &lt;none&gt; and <b>x</b>")

    adapter(psa_server, psa_http).add_note("1001", text)

    [post] = psa_server.requests_to("POST", ACTIONS)
    assert post.json()[0]["note_html"] == (
        "Run Set-Mailbox -Identity &lt;UserPrincipalName&gt; with "
        "&lt;Enabled&gt;true&lt;/Enabled&gt;<br>the log said &amp;lt;none&amp;gt; and "
        "&lt;b&gt;x&lt;/b&gt;")
    assert psa_server.notes("1001")[0]["note"] == text   # as Halo shows it


def test_configured_outcome_and_tenant_are_used(psa_http):
    with PsaServer(halo_tenant="acme") as server:
        adapter(server, psa_http, note_outcome="Escalation").add_note("1001", "x")

        [token_request] = server.requests_to("POST", TOKEN)
        assert token_request.query == {"tenant": ["acme"]}
        assert server.notes("1001")[0]["outcome"] == "Escalation"


def test_token_is_reused_until_it_nears_expiry(psa_server, psa_http):
    psa = adapter(psa_server, psa_http)
    psa.add_note("1001", "one")
    adapter(psa_server, psa_http).add_note("1001", "two")

    assert len(psa_server.requests_to("POST", TOKEN)) == 1


def test_short_lived_token_is_not_kept_past_its_life(psa_http):
    # a 4 s token is kept for half its life: long enough that a slow machine still reuses it
    with PsaServer(halo_token_ttl=4) as server:
        psa = adapter(server, psa_http)
        psa.get_ticket("1001")
        psa.get_ticket("1001")
        time.sleep(2.2)
        psa.get_ticket("1001")

        assert len(server.requests_to("POST", TOKEN)) == 2
        assert len(server.requests_to("GET", "/api/Tickets/1001")) == 3


def test_expired_token_is_refreshed_once_and_the_call_retried(psa_server, psa_http):
    psa = adapter(psa_server, psa_http)
    psa.get_ticket("1001")
    psa_server.revoke_tokens()

    note_id = psa.add_note("1001", "after expiry")

    assert [str(n["id"]) for n in psa_server.notes("1001")] == [note_id]
    assert len(psa_server.requests_to("POST", TOKEN)) == 2
    assert len(psa_server.requests_to("POST", ACTIONS)) == 2


def test_a_single_401_refreshes_the_token_and_succeeds(psa_server, psa_http):
    psa_server.inject("POST", ACTIONS, status=401)

    adapter(psa_server, psa_http).add_note("1001", "x")

    assert len(psa_server.notes("1001")) == 1
    first, second = psa_server.requests_to("POST", TOKEN)
    posts = psa_server.requests_to("POST", ACTIONS)
    assert len(posts) == 2
    assert posts[0].headers["authorization"] != posts[1].headers["authorization"]


def test_persistent_401_is_permanent_after_exactly_one_refresh(psa_server, psa_http):
    psa_server.inject("POST", ACTIONS, status=401, times=5)

    with pytest.raises(PsaPermanent, match="authentication failed"):
        adapter(psa_server, psa_http).add_note("1001", "x")

    assert len(psa_server.requests_to("POST", TOKEN)) == 2
    assert len(psa_server.requests_to("POST", ACTIONS)) == 2


def test_refused_client_secret_is_permanent_and_hidden(psa_server, psa_http):
    wrong = "haloWrongSecret-qq42"

    with pytest.raises(PsaPermanent) as caught:
        adapter(psa_server, psa_http, client_secret=wrong).add_note("1001", "x")

    assert "authentication failed" in caught.value.reason
    assert wrong not in caught.value.reason and HALO_CLIENT_SECRET not in caught.value.reason
    assert psa_server.requests_to("POST", ACTIONS) == []


def test_429_is_retryable_with_retry_after_and_the_wait_is_honoured(
    psa_server, psa_http, psa_deliver
):
    psa_server.inject("POST", ACTIONS, status=429, headers={"Retry-After": "1"})
    marker = note_marker(62)

    note_id, errors = psa_deliver(adapter(psa_server, psa_http), "1001", marker, f"x {marker}")

    [error] = errors
    assert type(error) is PsaRetryable and error.retry_after == 1.0
    assert [str(n["id"]) for n in psa_server.notes("1001")] == [note_id]
    first, second = psa_server.requests_to("POST", ACTIONS)
    assert second.time - first.time >= 0.95


def test_503_twice_then_success_writes_one_note(psa_server, psa_http, psa_deliver):
    psa_server.inject("POST", ACTIONS, status=503, times=2)
    marker = note_marker(63)

    note_id, errors = psa_deliver(adapter(psa_server, psa_http), "1001", marker, f"x {marker}")

    assert len(errors) == 2
    assert [str(n["id"]) for n in psa_server.notes("1001")] == [note_id]


def test_answer_lost_after_write_is_ambiguous_and_reconciled(psa_server, psa_http):
    psa_server.inject("POST", ACTIONS, action="accept_then_drop")
    with pytest.raises(PsaAmbiguous):
        adapter(psa_server, psa_http).add_note("1001", "first")

    psa_server.inject("POST", ACTIONS, action="accept_then_drop")
    marker = note_marker(64)
    note_id = write_note_once(adapter(psa_server, psa_http), "1001", marker, f"x\n{marker}",
                              check_first=False)

    assert [n["id"] for n in psa_server.notes("1001")][1:] == [int(note_id)]
    assert len(psa_server.requests_to("POST", ACTIONS)) == 2


def test_missing_ticket_is_permanent_naming_it(psa_server, psa_http):
    with pytest.raises(PsaPermanent, match="ticket 999 not found"):
        adapter(psa_server, psa_http).add_note("999", "x")
    with pytest.raises(PsaPermanent, match="ticket 999 not found"):
        adapter(psa_server, psa_http).get_ticket("999")


def test_requests_to_one_halo_are_about_a_second_apart(psa_server, psa_http):
    psa = build_adapter("halopsa", psa_server.settings("halopsa"), http=psa_http)

    psa.add_note("1001", "x")
    psa.get_ticket("1001")
    psa.find_note_by_marker("1001", "nothing")

    times = [r.time for r in psa_server.requests]
    assert len(times) == 4
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert all(0.9 <= gap <= 2.5 for gap in gaps), gaps


def test_workers_sharing_redis_share_the_token_and_the_spacing(psa_server, psa_http, psa_redis):
    psa_redis.delete_after(f"psa:*{psa_server.url}*")
    workers = [adapter(psa_server, psa_http, redis=psa_redis.client, min_interval=0.4)
               for _ in range(2)]

    workers[0].get_ticket("1001")
    workers[1].get_ticket("1001")

    assert len(psa_server.requests_to("POST", TOKEN)) == 1
    times = [r.time for r in psa_server.requests]
    assert all(b - a >= 0.35 for a, b in zip(times, times[1:], strict=False)), times
    (cached,) = psa_redis.client.scan_iter(match=f"psa:token:halopsa:{psa_server.url}:*")
    token = psa_server.requests_to("GET", "/api/Tickets/1001")[0].headers["authorization"]
    sealed = psa_redis.client.get(cached)
    assert token.removeprefix("Bearer ").encode() not in sealed   # sealed, not in the clear


def test_a_turn_further_away_than_two_seconds_is_not_taken_and_ends_busy(
    psa_server, psa_http, psa_redis
):
    psa_redis.delete_after(f"psa:*{psa_server.url}*")

    def worker():
        # a configured longer wait is capped: a worker thread is not held for it
        return adapter(psa_server, psa_http, redis=psa_redis.client, min_interval=1.5,
                       rate_wait=30)

    worker().get_ticket("1001")     # the token, then the ticket 1.5 s later
    outcomes: list[tuple[str, float, float]] = []
    lock = threading.Lock()

    def call() -> None:
        started = time.monotonic()
        try:
            worker().get_ticket("1001")
            outcome, wait = "sent", 0.0
        except PsaBusy as busy:
            outcome, wait = "busy", busy.retry_after
        with lock:
            outcomes.append((outcome, wait, time.monotonic() - started))

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)

    assert sorted(o for o, _, _ in outcomes) == ["busy", "busy", "busy", "sent"], outcomes
    assert all(took < 2.2 for _, _, took in outcomes), outcomes
    assert len(psa_server.requests) == 3
    # the refused callers took no turn: each is told the same wait, about 3 s
    assert all(2.5 <= wait <= 3.1 for o, wait, _ in outcomes if o == "busy"), outcomes


def test_missing_settings_are_permanent(psa_http):
    with pytest.raises(PsaPermanent, match="halopsa settings missing: client_secret"):
        build_adapter("halopsa", {"base_url": "https://halo.example", "client_id": "c"})
