"""Autotask adapter against the local PSA server."""

from __future__ import annotations

import threading
import time

import pytest

from tests.servers.psa import AT_INTEGRATION_CODE, AT_SECRET, AT_USERNAME, PsaServer
from webapp.integrations.psa import (
    PsaAmbiguous,
    PsaBusy,
    PsaPermanent,
    PsaRetryable,
    build_adapter,
    note_marker,
    write_note_once,
)
from webapp.integrations.psa.autotask import concurrency_key

NOTES = "/Tickets/1001/Notes"
NOTES_TEMPLATE = "/atservicesrest/V1.0/Tickets/{id}/Notes"
# A second MSP whose database is served by the same zone.
OTHER_USERNAME = "api-user@globex.example"
OTHER_SECRET = "atSecret-Globex-S3cr3t-8d1f"


def adapter(server, http, timeout: float = 5.0, redis=None, **overrides):
    return build_adapter("autotask", server.settings("autotask", **overrides),
                         http=http, redis=redis, timeout=timeout)


def test_note_lands_on_the_ticket_with_the_three_headers_and_note_fields(psa_server, psa_http):
    marker = note_marker(51)
    note_id = write_note_once(adapter(psa_server, psa_http), "1001", marker,
                              f"Escalated: <b>VPN</b> down\n{marker}", check_first=True)

    [note] = psa_server.notes("1001")
    assert note_id == str(note["id"])
    [post] = psa_server.requests_to("POST", NOTES)
    assert post.path == f"/atservicesrest/V1.0{NOTES}"
    assert post.headers["apiintegrationcode"] == AT_INTEGRATION_CODE
    assert post.headers["username"] == AT_USERNAME
    assert post.headers["secret"] == AT_SECRET
    body = post.json()
    assert body["ticketID"] == 1001
    assert body["description"] == f"Escalated: <b>VPN</b> down\n{marker}"
    assert set(body) == {"ticketID", "title", "description", "noteType", "publish"}
    assert psa_server.notes("1002") == []


def test_note_text_reaches_autotask_as_written_not_read_as_html(psa_server, psa_http):
    text = ("Run Set-Mailbox -Identity <UserPrincipalName> with <Enabled>true</Enabled>\n"
            "the log said &lt;none&gt; and <b>x</b>")

    adapter(psa_server, psa_http).add_note("1001", text)

    [post] = psa_server.requests_to("POST", NOTES)
    assert post.json()["description"] == text
    assert psa_server.notes("1001")[0]["description"] == text


def test_zone_is_discovered_for_the_api_user(psa_server, psa_http):
    settings = psa_server.settings("autotask")
    del settings["zone_url"]
    settings["zone_lookup_url"] = f"{psa_server.url}/atservicesrest/v1.0/zoneInformation"

    ticket = build_adapter("autotask", settings, http=psa_http).get_ticket("1001")

    assert ticket["id"] == 1001
    first, second = psa_server.requests
    assert first.path == "/atservicesrest/v1.0/zoneInformation"
    assert first.query == {"user": [AT_USERNAME]}
    assert second.path == "/atservicesrest/V1.0/Tickets/1001"


def test_unknown_zone_user_is_permanent(psa_server, psa_http):
    settings = psa_server.settings("autotask", username="nobody@acme.example")
    del settings["zone_url"]
    settings["zone_lookup_url"] = f"{psa_server.url}/atservicesrest/v1.0/zoneInformation"

    with pytest.raises(PsaPermanent, match="no zone found"):
        build_adapter("autotask", settings, http=psa_http).add_note("1001", "x")


def test_429_is_retryable_with_retry_after_and_the_wait_is_honoured(
    psa_server, psa_http, psa_deliver
):
    psa_server.inject("POST", NOTES, status=429, headers={"Retry-After": "1"},
                      body={"errors": ["Rate limit exceeded"]})
    marker = note_marker(52)

    note_id, errors = psa_deliver(adapter(psa_server, psa_http), "1001", marker, f"x {marker}")

    [error] = errors
    assert type(error) is PsaRetryable and error.retry_after == 1.0
    assert [str(n["id"]) for n in psa_server.notes("1001")] == [note_id]
    first, second = psa_server.requests_to("POST", NOTES)
    assert second.time - first.time >= 0.95


def test_503_twice_then_success_writes_one_note(psa_server, psa_http, psa_deliver):
    psa_server.inject("POST", NOTES, status=503, times=2)
    marker = note_marker(53)

    note_id, errors = psa_deliver(adapter(psa_server, psa_http), "1001", marker, f"x {marker}")

    assert len(errors) == 2
    assert [str(n["id"]) for n in psa_server.notes("1001")] == [note_id]


def test_answer_lost_after_write_is_ambiguous_and_reconciled(psa_server, psa_http):
    psa_server.inject("POST", NOTES, action="accept_then_drop")
    with pytest.raises(PsaAmbiguous):
        adapter(psa_server, psa_http).add_note("1001", "first")

    psa_server.inject("POST", NOTES, action="accept_then_drop")
    marker = note_marker(54)
    note_id = write_note_once(adapter(psa_server, psa_http), "1001", marker, f"x {marker}",
                              check_first=False)

    assert [n["id"] for n in psa_server.notes("1001")][1:] == [int(note_id)]
    assert len(psa_server.requests_to("POST", NOTES)) == 2


def test_plain_500_on_write_is_ambiguous_then_delivered_once(psa_server, psa_http, psa_deliver):
    psa_server.inject("POST", NOTES, status=500,
                      body={"errors": ["Object reference not set to an instance of an object."]})
    marker = note_marker(55)

    note_id, errors = psa_deliver(adapter(psa_server, psa_http), "1001", marker, f"x {marker}")

    [error] = errors
    assert type(error) is PsaAmbiguous and "Object reference" in error.reason
    assert [str(n["id"]) for n in psa_server.notes("1001")] == [note_id]


def test_authentication_failure_sent_as_500_is_permanent(psa_server, psa_http):
    psa_server.inject("POST", NOTES, action="auth_500")

    with pytest.raises(PsaPermanent, match="authentication failed"):
        adapter(psa_server, psa_http).add_note("1001", "x")


def test_invalid_integration_code_is_permanent_and_hidden(psa_server, psa_http):
    wrong = "WRONGINTEGRATIONCODE-123"

    with pytest.raises(PsaPermanent) as caught:
        adapter(psa_server, psa_http, integration_code=wrong).get_ticket("1001")

    assert "authentication failed (500)" in caught.value.reason
    assert wrong not in caught.value.reason and AT_INTEGRATION_CODE not in caught.value.reason


def test_wrong_secret_401_is_permanent_and_hidden(psa_server, psa_http):
    wrong = "atWrongSecret-xyz789"

    with pytest.raises(PsaPermanent) as caught:
        adapter(psa_server, psa_http, secret=wrong).add_note("1001", "x")

    assert "authentication failed (401)" in caught.value.reason
    assert wrong not in caught.value.reason and AT_SECRET not in caught.value.reason


def test_a_psa_message_echoing_the_secret_is_redacted(psa_server, psa_http):
    psa_server.inject("POST", NOTES, status=400, body={"errors": [f"Bad secret {AT_SECRET}"]})

    with pytest.raises(PsaPermanent) as caught:
        adapter(psa_server, psa_http).add_note("1001", "x")

    assert caught.value.reason == "Autotask: rejected (400): Bad secret ***"


def test_missing_ticket_is_permanent_naming_it(psa_server, psa_http):
    with pytest.raises(PsaPermanent, match="ticket 999 not found"):
        adapter(psa_server, psa_http).add_note("999", "x")
    # Autotask answers a GET for an unknown id with 200 and item null.
    with pytest.raises(PsaPermanent, match="ticket 999 not found"):
        adapter(psa_server, psa_http).get_ticket("999")


def test_marker_is_found_on_a_later_page(psa_http):
    with PsaServer(at_page_size=2) as server:
        for i in range(4):
            server.seed_note("1001", f"note {i}")
        seeded = server.seed_note("1001", f"late {note_marker(56)}")

        found = adapter(server, psa_http).find_note_by_marker("1001", note_marker(56))

        assert found == str(seeded["id"])
        assert len(server.requests_to("GET", NOTES)) == 3


def test_long_text_is_cut_but_keeps_its_marker(psa_server, psa_http):
    marker = note_marker(57)

    write_note_once(adapter(psa_server, psa_http), "1001", marker, f"{marker}\n" + "y" * 40000,
                    check_first=False)
    write_note_once(adapter(psa_server, psa_http), "1002", marker, "z" * 40000 + marker,
                    check_first=False)

    for ticket in ("1001", "1002"):
        [note] = psa_server.notes(ticket)
        assert len(note["description"]) <= 32000 and marker in note["description"]


def _concurrent_notes(server, adapters, count: int) -> None:
    server.inject("POST", "/Notes", delay=0.25, times=count)
    errors: list[BaseException] = []

    def post(i: int) -> None:
        try:
            adapters[i % len(adapters)].add_note("1001", f"note {i}")
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)

    threads = [threading.Thread(target=post, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert len(server.notes("1001")) == count


def test_no_more_than_three_concurrent_requests_per_endpoint(psa_server, psa_http):
    _concurrent_notes(psa_server, [adapter(psa_server, psa_http)], 9)

    assert psa_server.max_in_flight("/atservicesrest/V1.0/Tickets/{id}/Notes") == 3


def test_workers_sharing_redis_share_the_three_request_limit(psa_server, psa_http, psa_redis):
    psa_redis.delete_after(f"psa:limit:autotask:{psa_server.url}*")
    key = concurrency_key(f"{psa_server.url}/atservicesrest/", AT_USERNAME,
                          "v1.0/tickets/{id}/notes")
    workers = [adapter(psa_server, psa_http, redis=psa_redis.client) for _ in range(3)]
    # Three holders on another worker host use the whole budget.
    psa_redis.client.zadd(key, {"elsewhere-1": 9e15, "elsewhere-2": 9e15, "elsewhere-3": 9e15})
    with pytest.raises(PsaRetryable, match="rate budget exhausted"):
        adapter(psa_server, psa_http, redis=psa_redis.client, rate_wait=0.3).add_note("1001", "x")
    assert psa_server.requests_to("POST", NOTES) == []
    psa_redis.client.delete(key)

    _concurrent_notes(psa_server, workers, 9)

    assert psa_server.max_in_flight("/atservicesrest/V1.0/Tickets/{id}/Notes") == 3


def test_a_full_budget_ends_the_attempt_busy_after_at_most_two_seconds(
    psa_server, psa_http, psa_redis
):
    psa_redis.delete_after(f"psa:limit:autotask:{psa_server.url}*")
    key = concurrency_key(f"{psa_server.url}/atservicesrest/", AT_USERNAME,
                          "v1.0/tickets/{id}/notes")
    psa_redis.client.zadd(key, {"elsewhere-1": 9e15, "elsewhere-2": 9e15, "elsewhere-3": 9e15})
    # even a configured longer wait is capped: a worker thread is not held for it
    psa = adapter(psa_server, psa_http, redis=psa_redis.client, rate_wait=30)

    started = time.monotonic()
    with pytest.raises(PsaBusy, match="rate budget exhausted") as caught:
        psa.add_note("1001", "x")

    assert 1.8 <= time.monotonic() - started <= 2.6
    assert caught.value.retry_after > 0
    assert psa_server.requests_to("POST", NOTES) == []


def test_accounts_sharing_a_zone_each_have_their_own_three_request_budget(
    psa_http, psa_redis
):
    with PsaServer(at_users={OTHER_USERNAME: OTHER_SECRET}) as server:
        psa_redis.delete_after(f"psa:limit:autotask:{server.url}*")
        # one adapter per request, as separate workers would build them
        acme = [adapter(server, psa_http, redis=psa_redis.client) for _ in range(6)]
        globex = [adapter(server, psa_http, redis=psa_redis.client, username=OTHER_USERNAME,
                          secret=OTHER_SECRET) for _ in range(3)]
        server.inject("POST", "/Notes", delay=0.6, times=9)
        errors: list[BaseException] = []

        def post(psa) -> None:
            try:
                psa.add_note("1001", "note")
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=post, args=(psa,)) for psa in acme[:3] + globex]
        threads += [threading.Thread(target=post, args=(psa,)) for psa in acme[3:]]
        for t in threads:
            t.start()
        time.sleep(0.3)
        keys = [k.decode() for k in psa_redis.client.scan_iter(
            match=f"psa:limit:autotask:{server.url}*")]
        for t in threads:
            t.join(30)

        assert errors == []
        assert len(server.notes("1001")) == 9
        assert server.max_in_flight(NOTES_TEMPLATE, OTHER_USERNAME) == 3
        assert server.max_in_flight(NOTES_TEMPLATE, AT_USERNAME) == 3
        assert server.max_in_flight(NOTES_TEMPLATE) == 6      # neither waited for the other
        assert len(keys) == 2
        for secret in (AT_USERNAME, OTHER_USERNAME, AT_SECRET, OTHER_SECRET,
                       AT_INTEGRATION_CODE):
            assert not [k for k in keys if secret.lower() in k.lower()]


def test_missing_settings_are_permanent(psa_http):
    with pytest.raises(PsaPermanent, match="autotask settings missing: secret, integration_code"):
        build_adapter("autotask", {"username": "u"}, http=psa_http)
