"""Login, logout, token expiry and revocation."""
import threading
from datetime import timedelta

import pytest

from tests.conftest import TEST_PASSWORD, app_config
from webapp import create_app
from webapp.extensions import db
from webapp.models import ApiToken
from webapp.models.base import utcnow


def login(client, email, password=TEST_PASSWORD):
    return client.post("/api/v1/auth/login", json={"email": email, "password": password})


def test_login_with_good_credentials_returns_a_working_bearer_token(client, tenant):
    response = login(client, tenant.users["engineer"]["email"])
    assert response.status_code == 200
    body = response.get_json()
    assert body["token_type"] == "Bearer" and body["expires_in"] > 0
    assert body["user"]["email"] == tenant.users["engineer"]["email"]
    assert "password_hash" not in body["user"]
    me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 200 and me.get_json()["role"] == "engineer"


def test_nul_characters_are_422_not_500(client, tenant):
    response = login(client, "a\x00b@example.com")
    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "validation_error"


def test_login_email_is_case_insensitive(client, tenant):
    assert login(client, tenant.users["admin"]["email"].upper()).status_code == 200


def test_login_with_bad_password_is_401_in_the_error_shape(client, tenant):
    response = login(client, tenant.users["engineer"]["email"], "wrong-password")
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "unauthorized"


def test_login_unknown_email_is_401(client, tenant):
    assert login(client, "nobody@nowhere.example").status_code == 401


def test_deleted_user_cannot_log_in_and_their_token_stops(client, tenant):
    engineer = tenant.users["engineer"]
    deleted = client.delete(f"/api/v1/users/{engineer['id']}", headers=tenant.headers("admin"))
    assert deleted.status_code == 204
    assert login(client, engineer["email"]).status_code == 401
    assert client.get("/api/v1/me", headers=tenant.headers("engineer")).status_code == 401


def test_logout_revokes_the_token_at_once(client, tenant):
    headers = tenant.headers("engineer")
    assert client.post("/api/v1/auth/logout", headers=headers).status_code == 204
    response = client.get("/api/v1/me", headers=headers)
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "unauthorized"


def test_expired_token_is_401(app, client, tenant):
    with app.app_context():
        db.session.execute(db.update(ApiToken).values(expires_at=utcnow() - timedelta(seconds=1)))
        db.session.commit()
    assert client.get("/api/v1/me", headers=tenant.headers("engineer")).status_code == 401


def test_missing_or_malformed_token_is_401(client, tenant):
    assert client.get("/api/v1/me").status_code == 401
    assert client.get("/api/v1/me", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/api/v1/me", headers={"Authorization": "Basic abc"}).status_code == 401


def test_repeated_failed_logins_are_rate_limited(client, tenant):
    email = tenant.users["viewer"]["email"]
    codes = [login(client, email, "bad-password").status_code for _ in range(12)]
    assert codes[:10] == [401] * 10
    assert codes[-1] == 429
    limited = login(client, email)
    assert limited.get_json()["error"]["code"] == "rate_limited"
    assert int(limited.headers["Retry-After"]) > 0


def test_successful_logins_are_not_rate_limited(client, tenant):
    email = tenant.users["viewer"]["email"]
    assert [login(client, email).status_code for _ in range(12)] == [200] * 12


def login_from(client, email, address, password="bad-password"):
    return client.post("/api/v1/auth/login", json={"email": email, "password": password},
                       headers={"X-Forwarded-For": address})


@pytest.fixture
def behind_a_proxy(app_env):
    """The web role behind one trusted proxy, which reports each client's address."""
    return create_app(app_config(app_env, TRUSTED_PROXIES=1)).test_client()


def test_failures_against_many_emails_from_one_address_are_rate_limited(client, tenant):
    codes = [login(client, f"nobody{n}@example.com", "bad-password").status_code
             for n in range(40)]
    assert codes[:20] == [401] * 20 and set(codes[20:]) == {429}, codes
    refused = login(client, "someone-else@example.com", "bad-password")
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    assert refused.get_json()["error"]["code"] == "rate_limited"


def test_failures_against_one_email_from_many_addresses_are_rate_limited(
        behind_a_proxy, tenant):
    email = tenant.users["viewer"]["email"]
    codes = [login_from(behind_a_proxy, email, f"203.0.113.{n}").status_code
             for n in range(12)]
    assert codes[:10] == [401] * 10 and set(codes[10:]) == {429}, codes


def test_all_failures_together_have_a_budget(app_env, tenant):
    capped = create_app(app_config(app_env, TRUSTED_PROXIES=1,
                                   LOGIN_RATE_LIMIT_TOTAL=5)).test_client()
    codes = [login_from(capped, f"n{n}@example.com", f"198.51.100.{n}").status_code
             for n in range(8)]
    assert codes == [401] * 5 + [429] * 3, codes


def test_forwarded_addresses_are_ignored_unless_proxies_are_trusted(client, tenant):
    codes = [login_from(client, f"n{n}@example.com", f"203.0.113.{n}").status_code
             for n in range(22)]
    assert codes[20:] == [429, 429], codes     # one address (the test client's) after all


def test_concurrent_failures_are_counted_before_the_password_check(app_env, tenant):
    """Thirty attempts at once on one email: no more than the budget reach a password check,
    however they interleave."""
    racing = create_app(app_config(app_env, TRUSTED_PROXIES=1))
    email = tenant.users["viewer"]["email"]
    codes: list[int] = []

    def attempt(n: int) -> None:
        codes.append(login_from(racing.test_client(), email, f"192.0.2.{n}").status_code)

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(codes) == 30 and codes.count(401) == 10 and codes.count(429) == 20, codes


def test_a_login_that_finds_every_password_check_busy_is_429(app_env, tenant):
    from webapp import auth
    busy = create_app(app_config(app_env, PASSWORD_CHECKS_CONCURRENT=1,
                                 PASSWORD_CHECK_WAIT_SECONDS=0.2))
    with busy.app_context():
        checks = auth.password_checks()
        assert checks.acquire(timeout=1)
        try:
            response = busy.test_client().post(
                "/api/v1/auth/login",
                json={"email": tenant.users["viewer"]["email"], "password": TEST_PASSWORD})
        finally:
            checks.release()
    assert response.status_code == 429 and response.headers["Retry-After"] == "1"
    assert response.get_json()["error"]["code"] == "rate_limited"
