"""PSA URLs chosen by tenants reach only public addresses unless the operator allows more."""
import time

import httpx
import pytest

from tasks import psa as psa_tasks
from tests.conftest import app_config
from tests.factories import undispatched_handoff
from tests.helpers import psa_row
from webapp import create_app
from webapp.extensions import db
from webapp.integrations import outbound
from webapp.models import Account
from webapp.services import psa_settings


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8080/", "http://10.1.2.3/", "https://192.168.0.10/",
    "http://169.254.169.254/latest/meta-data/", "http://[::1]:5000/", "http://0.0.0.0/",
    "https://localhost/", "https://LOCALHOST./", "https://psa.localhost/",
    "http://100.64.0.1/", "http://[::ffff:127.0.0.1]/", "http://224.0.0.1/",
    # IPv6 addresses that carry a private IPv4 one: NAT64, 6to4, Teredo
    "http://[64:ff9b::a9fe:a9fe]/", "http://[2002:7f00:1::1]/",
    "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/",
])
def test_local_and_private_urls_are_refused_without_resolving(url):
    assert outbound.refusal_for_url(url)


@pytest.mark.parametrize("url", [
    "https://na.myconnectwise.net/", "https://webservices2.autotask.net/atservicesrest/",
    "https://8.8.8.8/", "https://msp.halopsa.com", "https://[2606:4700:4700::1111]/",
    "https://[64:ff9b::808:808]/",
])
def test_public_urls_and_names_pass_the_static_check(url):
    assert outbound.refusal_for_url(url) is None


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_the_public_only_client_refuses_a_loopback_server_at_connect_time(psa_server, host):
    url = psa_server.url.replace("127.0.0.1", host) + "/v4_6_release/apis/3.0/system/info"
    with outbound.client(allow_private=False) as http, pytest.raises(httpx.ConnectError) as error:
        http.get(url.replace("http://", "https://"))
    assert outbound.is_refusal(error.value)
    assert "not a public address" in str(error.value)
    assert psa_server.requests == []
    with outbound.client(allow_private=True) as http:    # the operator allowed it
        assert http.get(url).status_code < 500
    assert len(psa_server.requests) == 1


@pytest.fixture
def public_only(app_env):
    return create_app(app_config(app_env, PSA_ALLOW_PRIVATE_ADDRESSES=False,
                                 PSA_WAIT_FOR_ASSESSMENT_SECONDS=0))


def test_an_admin_cannot_point_the_psa_at_a_private_address(public_only, tenant, psa_server):
    client = public_only.test_client()
    for provider, field in (("connectwise", "site_url"), ("halopsa", "base_url"),
                            ("autotask", "zone_url")):
        body = {"provider": provider, **psa_server.settings(provider)}
        response = client.put("/api/v1/account/psa", json=body, headers=tenant.headers())
        assert response.status_code == 422, response.get_json()
        error = response.get_json()["error"]
        assert error["code"] == "validation_error"
        assert "public address" in str(error["details"][field])
    public = {"provider": "connectwise",
              **psa_server.settings("connectwise", site_url="https://na.myconnectwise.net")}
    response = client.put("/api/v1/account/psa", json=public, headers=tenant.headers())
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["settings"]["site_url"] == "https://na.myconnectwise.net"


def test_a_push_to_a_name_that_resolves_to_loopback_fails_for_good(
        public_only, app_env, tenant, psa_server):
    """Settings saved before the rule, or a name whose DNS answer changed: the push is
    refused at connect time, with a reason, and nothing reaches the server."""
    handoff_id = undispatched_handoff(app_env, tenant, psa_ticket_id="1001")
    with public_only.app_context():
        account = db.session.get(Account, tenant.account_id)
        psa_settings.save(account, "connectwise", psa_server.settings(
            "connectwise", site_url=psa_server.url.replace("127.0.0.1", "localhost")
            .replace("http://", "https://")))
        db.session.commit()
        row_id = psa_row(public_only, handoff_id).id
        psa_tasks.push_handoff.run(row_id)   # the task's body, in this app's context
    row = psa_row(public_only, handoff_id)
    assert row.status == "dead" and row.next_attempt_at is None, (row.status, row.last_error)
    assert row.last_error == ("ConnectWise: refused to connect: the configured host is not a "
                              "public address")
    # a tenant's admin must not learn from it what an internal name resolves to
    port = psa_server.url.rsplit(":", 1)[1]
    for revealing in ("127.0.0.1", "localhost", port):
        assert revealing not in row.last_error
    assert psa_server.requests == []


def test_a_trickling_answer_is_abandoned_at_the_whole_request_deadline(psa_server):
    """One byte every half second never trips a per-read timeout; the deadline ends it."""
    psa_server.inject("GET", "/system/info", action="trickle", delay=0.5)
    url = psa_server.url + "/v4_6_release/apis/3.0/system/info"
    started = time.monotonic()
    with outbound.client(allow_private=True) as http, \
            pytest.raises(outbound.DeadlineExceeded) as caught:
        outbound.send(http, "GET", url, deadline=1.5, timeout=httpx.Timeout(5.0))
    took = time.monotonic() - started
    assert 1.4 <= took < 5.0, took     # the trickle alone would run for minutes
    assert "within 1.5s" in str(caught.value)


def test_an_answer_past_the_byte_cap_is_not_read(psa_server):
    psa_server.inject("GET", "/system/info", action="huge")
    url = psa_server.url + "/v4_6_release/apis/3.0/system/info"
    with outbound.client(allow_private=True) as http, \
            pytest.raises(outbound.ResponseTooLarge):
        outbound.send(http, "GET", url, deadline=10, max_bytes=64 * 1024)
    with outbound.client(allow_private=True) as http:   # under the cap: read whole
        response = outbound.send(http, "GET", url, deadline=10, max_bytes=64 * 1024)
    assert response.status_code == 401 and response.json()["code"]   # no credentials sent


def test_a_psa_write_that_trickles_is_an_ambiguous_failure_with_a_reason(psa_server):
    from webapp.integrations.psa import PsaAmbiguous, build_adapter
    psa_server.inject("POST", "/notes", action="trickle", delay=0.4)
    with outbound.client(allow_private=True) as http, \
            build_adapter("connectwise", psa_server.settings("connectwise"), http=http,
                          timeout=1.0) as adapter, pytest.raises(PsaAmbiguous) as caught:
        adapter.add_note("1001", "a note [escalation-handoff:1]")
    assert caught.value.reason == ("ConnectWise: no complete answer to the write within 1s; "
                                   "it may have been applied")


def test_retry_after_is_clamped_to_an_hour():
    from webapp.integrations.psa.base import parse_retry_after
    assert parse_retry_after("604800") == 3600.0
    assert parse_retry_after("Wed, 21 Oct 2099 07:28:00 GMT") == 3600.0
    assert parse_retry_after("30") == 30.0


def test_plain_http_psa_urls_are_refused_unless_private_addresses_are_allowed(
        public_only, app, tenant):
    body = {"provider": "halopsa", "base_url": "http://msp.halopsa.com",
            "client_id": "id", "client_secret": "secret"}
    response = public_only.test_client().put("/api/v1/account/psa", json=body,
                                             headers=tenant.headers())
    assert response.status_code == 422, response.get_json()
    assert "https" in str(response.get_json()["error"]["details"]["base_url"])
    # the operator allows private addresses (a PSA on the LAN): plain http is accepted
    allowed = app.test_client().put("/api/v1/account/psa", json=body, headers=tenant.headers())
    assert allowed.status_code == 200, allowed.get_json()


def test_the_public_only_client_refuses_plain_http_even_to_a_public_name():
    with outbound.client(allow_private=False) as http, \
            pytest.raises(outbound.PlainHttpRefused):
        outbound.send(http, "GET", "http://psa.example.com/", deadline=2)


def test_allow_private_addresses_is_one_switch_with_the_psa_name_as_alias():
    from webapp.config import Config
    assert Config.from_env(env={"ALLOW_PRIVATE_ADDRESSES": "true"})["ALLOW_PRIVATE_ADDRESSES"]
    assert Config.from_env(env={"PSA_ALLOW_PRIVATE_ADDRESSES": "1"})["ALLOW_PRIVATE_ADDRESSES"]
    assert not Config.from_env(env={})["ALLOW_PRIVATE_ADDRESSES"]
