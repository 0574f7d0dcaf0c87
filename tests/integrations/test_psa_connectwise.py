"""ConnectWise Manage adapter against the local PSA server."""

from __future__ import annotations

import base64
import socket
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from tests.servers.psa import CW_CLIENT_ID, CW_COMPANY, CW_PRIVATE_KEY, CW_PUBLIC_KEY
from webapp.integrations.psa import (
    PROVIDERS,
    PsaAmbiguous,
    PsaPermanent,
    PsaRetryable,
    build_adapter,
    note_marker,
    write_note_once,
)

NOTES = "/service/tickets/1001/notes"


def adapter(server, http, timeout: float = 5.0, **overrides):
    return build_adapter("connectwise", server.settings("connectwise", **overrides),
                         http=http, timeout=timeout)


def test_note_lands_on_the_ticket_with_basic_auth_client_id_and_internal_flag(
    psa_server, psa_http
):
    marker = note_marker(41)
    note_id = write_note_once(adapter(psa_server, psa_http), "1001", marker,
                              f"Escalated: printer on fire\n{marker}", check_first=True)

    [note] = psa_server.notes("1001")
    assert note_id == str(note["id"])
    assert note["text"] == f"Escalated: printer on fire\n{marker}"
    assert note["internalAnalysisFlag"] is True
    assert psa_server.notes("1002") == []
    [post] = psa_server.requests_to("POST", NOTES)
    assert post.path == f"/v4_6_release/apis/3.0{NOTES}"
    basic = base64.b64encode(f"{CW_COMPANY}+{CW_PUBLIC_KEY}:{CW_PRIVATE_KEY}".encode()).decode()
    assert post.headers["authorization"] == f"Basic {basic}"
    assert post.headers["clientid"] == CW_CLIENT_ID
    assert post.json() == {"text": note["text"], "internalAnalysisFlag": True}


def test_codebase_is_discovered_from_company_info(psa_server, psa_http):
    adapter(psa_server, psa_http).get_ticket("1001")

    first, second = psa_server.requests
    assert (first.method, first.path) == ("GET", f"/login/companyinfo/{CW_COMPANY}")
    assert second.path == "/v4_6_release/apis/3.0/service/tickets/1001"


def test_a_discovered_codebase_is_remembered_until_a_404_says_it_moved(psa_server, psa_http):
    adapter(psa_server, psa_http).get_ticket("1001")
    adapter(psa_server, psa_http).get_ticket("1001")   # a later push: no second discovery
    assert [r.path for r in psa_server.requests] == [
        f"/login/companyinfo/{CW_COMPANY}", "/v4_6_release/apis/3.0/service/tickets/1001",
        "/v4_6_release/apis/3.0/service/tickets/1001"]
    with pytest.raises(PsaPermanent):
        adapter(psa_server, psa_http).get_ticket("4040")   # a 404 through the remembered one
    adapter(psa_server, psa_http).get_ticket("1001")
    assert psa_server.requests[-2].path == f"/login/companyinfo/{CW_COMPANY}"


def test_given_codebase_skips_discovery(psa_server, psa_http):
    ticket = adapter(psa_server, psa_http, codebase="v4_6_release/").get_ticket("1001")

    assert ticket["id"] == 1001
    assert [r.path for r in psa_server.requests] == ["/v4_6_release/apis/3.0/service/tickets/1001"]


def test_unknown_company_is_permanent(psa_server, psa_http):
    with pytest.raises(PsaPermanent, match="company 'globex' not found"):
        adapter(psa_server, psa_http, company_id="globex").add_note("1001", "hello")


def test_note_text_is_sent_as_written_not_read_as_html(psa_server, psa_http):
    # the note is plain text: what looks like markup is part of what the engineer wrote
    text = ("Run Set-Mailbox -Identity <UserPrincipalName> with <Enabled>true</Enabled>\n"
            "the log said &lt;none&gt; and <b>x</b>, a < b, mail <ops@acme.example>")

    adapter(psa_server, psa_http).add_note("1001", text)

    [post] = psa_server.requests_to("POST", NOTES)
    assert post.json()["text"] == text
    assert psa_server.notes("1001")[0]["text"] == text


def test_429_is_retryable_with_retry_after_and_the_wait_is_honoured(
    psa_server, psa_http, psa_deliver
):
    psa_server.inject("POST", NOTES, status=429, headers={"Retry-After": "1"},
                      body={"code": "TooManyRequests", "message": "Slow down"})
    marker = note_marker(42)

    note_id, errors = psa_deliver(adapter(psa_server, psa_http), "1001", marker, f"x {marker}")

    [error] = errors
    assert type(error) is PsaRetryable and error.retry_after == 1.0
    assert [str(n["id"]) for n in psa_server.notes("1001")] == [note_id]
    first, second = psa_server.requests_to("POST", NOTES)
    assert second.time - first.time >= 0.95


def test_retry_after_as_http_date_is_understood(psa_server, psa_http):
    when = datetime.now(UTC) + timedelta(seconds=30)
    psa_server.inject("POST", NOTES, status=429,
                      headers={"Retry-After": format_datetime(when, usegmt=True)})

    with pytest.raises(PsaRetryable) as caught:
        adapter(psa_server, psa_http).add_note("1001", "x")

    assert 25 <= caught.value.retry_after <= 31


def test_503_twice_then_success_writes_one_note(psa_server, psa_http, psa_deliver):
    psa_server.inject("POST", NOTES, status=503, times=2)
    marker = note_marker(43)

    note_id, errors = psa_deliver(adapter(psa_server, psa_http), "1001", marker, f"x {marker}")

    assert len(errors) == 2 and all(type(e) is PsaRetryable for e in errors)
    assert [str(n["id"]) for n in psa_server.notes("1001")] == [note_id]


def test_answer_lost_after_write_is_ambiguous(psa_server, psa_http):
    psa_server.inject("POST", NOTES, action="accept_then_drop")

    with pytest.raises(PsaAmbiguous):
        adapter(psa_server, psa_http).add_note("1001", "x")

    assert len(psa_server.notes("1001")) == 1


def test_answer_lost_after_write_is_reconciled_by_marker_without_a_second_post(
    psa_server, psa_http
):
    psa_server.inject("POST", NOTES, action="accept_then_drop")
    marker = note_marker(44)

    note_id = write_note_once(adapter(psa_server, psa_http), "1001", marker, f"x {marker}",
                              check_first=False)

    assert [str(n["id"]) for n in psa_server.notes("1001")] == [note_id]
    assert len(psa_server.requests_to("POST", NOTES)) == 1


def test_read_timeout_on_write_is_reconciled_by_marker(psa_server, psa_http):
    psa_server.inject("POST", NOTES, delay=1.0)
    marker = note_marker(45)

    note_id = write_note_once(adapter(psa_server, psa_http, timeout=0.3), "1001", marker,
                              f"x {marker}", check_first=False)

    assert [str(n["id"]) for n in psa_server.notes("1001")] == [note_id]


def test_ambiguous_write_that_did_not_land_is_raised_again(psa_server, psa_http):
    psa_server.inject("POST", NOTES, action="drop")
    marker = note_marker(46)

    with pytest.raises(PsaAmbiguous):
        write_note_once(adapter(psa_server, psa_http), "1001", marker, f"x {marker}",
                        check_first=False)

    assert psa_server.notes("1001") == []
    assert len(psa_server.requests_to("GET", NOTES)) == 1


def test_refused_connection_is_retryable_not_ambiguous(psa_http):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = {"site_url": f"http://127.0.0.1:{port}", "company_id": CW_COMPANY,
                "public_key": CW_PUBLIC_KEY, "private_key": CW_PRIVATE_KEY,
                "client_id": CW_CLIENT_ID, "codebase": "v4_6_release/"}

    with pytest.raises(PsaRetryable) as caught:
        build_adapter("connectwise", settings, http=psa_http).add_note("1001", "x")

    assert type(caught.value) is PsaRetryable


def test_wrong_keys_are_permanent_and_the_reason_hides_them(psa_server, psa_http):
    wrong = "cwWrongPrivateKey-abc123"

    with pytest.raises(PsaPermanent) as caught:
        adapter(psa_server, psa_http, private_key=wrong).add_note("1001", "x")

    assert "authentication failed (401)" in caught.value.reason
    assert wrong not in caught.value.reason and CW_PRIVATE_KEY not in caught.value.reason


def test_a_psa_message_echoing_the_key_is_redacted(psa_server, psa_http):
    psa_server.inject("POST", NOTES, status=403,
                      body={"code": "Forbidden", "message": f"Key {CW_PRIVATE_KEY} lacks rights"})

    with pytest.raises(PsaPermanent) as caught:
        adapter(psa_server, psa_http).add_note("1001", "x")

    assert "lacks rights" in caught.value.reason
    assert CW_PRIVATE_KEY not in caught.value.reason and CW_PRIVATE_KEY not in str(caught.value)


def test_missing_ticket_is_permanent_naming_it(psa_server, psa_http):
    with pytest.raises(PsaPermanent, match="ticket 999 not found"):
        adapter(psa_server, psa_http).add_note("999", "x")
    with pytest.raises(PsaPermanent, match="ticket 999 not found"):
        adapter(psa_server, psa_http).get_ticket("999")


def test_validation_error_is_permanent_with_the_psa_message(psa_server, psa_http):
    psa_server.inject("POST", NOTES, status=400, body={
        "code": "InvalidObject", "message": "ServiceNote object is invalid",
        "errors": [{"code": "InvalidField", "message": "text is too long", "field": "text"}],
    })

    with pytest.raises(PsaPermanent) as caught:
        adapter(psa_server, psa_http).add_note("1001", "x")

    assert caught.value.reason == (
        "ConnectWise: rejected (400): ServiceNote object is invalid; text is too long"
    )


def test_marker_is_found_beyond_the_first_page(psa_server, psa_http):
    for i in range(1005):
        psa_server.seed_note("1001", f"note {i}")
    seeded = psa_server.seed_note("1001", f"late {note_marker(47)}")

    found = adapter(psa_server, psa_http).find_note_by_marker("1001", note_marker(47))

    assert found == str(seeded["id"])
    assert [r.query["page"] for r in psa_server.requests_to("GET", NOTES)] == [["1"], ["2"]]


def test_check_first_finds_an_earlier_note_and_posts_nothing(psa_server, psa_http):
    marker = note_marker(48)
    earlier = psa_server.seed_note("1001", f"earlier {marker}")

    note_id = write_note_once(adapter(psa_server, psa_http), "1001", marker, f"x {marker}",
                              check_first=True)

    assert note_id == str(earlier["id"])
    assert psa_server.requests_to("POST", NOTES) == []


def test_marker_is_not_confused_with_a_longer_handoff_id(psa_server, psa_http):
    psa_server.seed_note("1001", f"other {note_marker(490)}")

    assert adapter(psa_server, psa_http).find_note_by_marker("1001", note_marker(49)) is None


def test_bad_settings_are_permanent_and_name_no_values(psa_http):
    with pytest.raises(PsaPermanent, match="connectwise settings missing: private_key, client_id"):
        build_adapter("connectwise", {"site_url": "https://na.example", "company_id": "acme",
                                      "public_key": "p", "private_key": ""})
    with pytest.raises(PsaPermanent, match="unknown PSA provider 'kaseya'"):
        build_adapter("kaseya", {})
    with pytest.raises(PsaPermanent, match="ticket id must be a number"):
        build_adapter("connectwise", {"site_url": "https://na.example", "company_id": "acme",
                                      "public_key": "p", "private_key": "k", "client_id": "c",
                                      "codebase": "v1/"}, http=psa_http).add_note("../1", "x")
    assert PROVIDERS == ("connectwise", "autotask", "halopsa")


def test_adapter_without_a_given_client_opens_and_closes_its_own(psa_server):
    """Its own client reaches public addresses only: the loopback server is refused."""
    with adapter(psa_server, None) as psa, pytest.raises(PsaPermanent) as caught:
        psa.get_ticket("1002")
    assert psa._http.is_closed
    assert "https" in caught.value.reason or "not a public address" in caught.value.reason
    assert psa_server.requests == []


def test_answer_lost_on_a_read_is_plainly_retryable(psa_server, psa_http):
    psa_server.inject("GET", "/service/tickets/1001", action="drop")

    with pytest.raises(PsaRetryable) as caught:
        adapter(psa_server, psa_http, codebase="v4_6_release/").get_ticket("1001")

    assert type(caught.value) is PsaRetryable
