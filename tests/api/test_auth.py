"""Login, logout, token expiry and revocation."""
from datetime import timedelta

from tests.conftest import TEST_PASSWORD
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
