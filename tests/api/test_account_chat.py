"""The account's chat channel and escalation policy (API.md "Account chat channel",
"Account escalation policy")."""
from tests.conftest import app_config
from tests.helpers import assert_error_shape
from webapp import create_app
from webapp.extensions import db
from webapp.models import Account

SLACK_URL = "https://hooks.slack.example.com/services/T000/B000/s3cr3t-t0ken-value"


def test_a_new_account_has_no_chat_channel_and_the_default_policy(client, tenant):
    chat = client.get("/api/v1/account/chat", headers=tenant.headers("engineer"))
    assert chat.status_code == 200
    assert chat.get_json() == {"provider": "none", "configured": False,
                               "webhook_url_set": False}
    policy = client.get("/api/v1/account/escalation-policy", headers=tenant.headers("viewer"))
    assert policy.status_code == 200
    assert policy.get_json() == {"remind_after_minutes": 15, "remind_roles": ["owner", "admin"]}


def test_the_webhook_url_is_stored_encrypted_and_never_returned(app, client, tenant):
    answer = client.put("/api/v1/account/chat", headers=tenant.headers("admin"),
                        json={"provider": "slack", "webhook_url": SLACK_URL})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.get_json() == {"provider": "slack", "configured": True,
                                 "webhook_url_set": True}
    shown = client.get("/api/v1/account/chat", headers=tenant.headers())
    assert "s3cr3t" not in shown.get_data(as_text=True)
    with app.app_context():
        account = db.session.get(Account, tenant.account_id)
        assert account.chat_secret and "s3cr3t" not in account.chat_secret
    cleared = client.put("/api/v1/account/chat", headers=tenant.headers("owner"),
                         json={"provider": "none"})
    assert cleared.get_json() == {"provider": "none", "configured": False,
                                  "webhook_url_set": False}
    with app.app_context():
        assert db.session.get(Account, tenant.account_id).chat_secret is None


def test_only_admins_set_the_chat_channel_and_the_policy(client, tenant):
    for path, body in (("/api/v1/account/chat", {"provider": "slack", "webhook_url": SLACK_URL}),
                       ("/api/v1/account/escalation-policy", {"remind_after_minutes": 5})):
        assert_error_shape(client.put(path, json=body, headers=tenant.headers("engineer")),
                           403, "forbidden")
        assert_error_shape(client.put(path, json=body, headers=tenant.headers("viewer")),
                           403, "forbidden")


def test_bad_chat_bodies_are_refused_with_the_field(client, tenant):
    headers = tenant.headers("admin")
    for body, field in (({"provider": "teams"}, "webhook_url"),
                        ({"provider": "discord", "webhook_url": SLACK_URL}, "provider"),
                        ({"provider": "slack", "webhook_url": "not a url"}, "webhook_url"),
                        ({"provider": "slack", "webhook_url": "ftp://files.example.com/x"},
                         "webhook_url"),
                        ({"provider": "none", "webhook_url": SLACK_URL}, "webhook_url"),
                        ({"provider": "slack", "webhook_url": SLACK_URL, "extra": 1}, "extra")):
        answer = client.put("/api/v1/account/chat", json=body, headers=headers)
        assert_error_shape(answer, 422, "validation_error")
        assert field in answer.get_json()["error"]["details"], (body, answer.get_json())
        assert "s3cr3t" not in answer.get_data(as_text=True)


def test_a_loopback_or_plain_http_webhook_is_refused_by_default(app_env, tenant):
    strict = create_app(app_config(app_env, ALLOW_PRIVATE_ADDRESSES=False,
                                   PSA_ALLOW_PRIVATE_ADDRESSES=False))
    client = strict.test_client()
    for url in ("https://127.0.0.1:8443/services/T/B/s3cr3t",
                "http://hooks.slack.example.com/services/T/B/s3cr3t",
                "https://10.1.2.3/services/T/B/s3cr3t"):
        answer = client.put("/api/v1/account/chat", headers=tenant.headers("admin"),
                            json={"provider": "slack", "webhook_url": url})
        assert_error_shape(answer, 422, "validation_error")
        assert "webhook_url" in answer.get_json()["error"]["details"]
        assert "s3cr3t" not in answer.get_data(as_text=True)
    with strict.app_context():
        assert db.session.get(Account, tenant.account_id).chat_provider == "none"


def test_the_escalation_policy_is_set_and_checked(client, tenant):
    headers = tenant.headers("owner")
    answer = client.put("/api/v1/account/escalation-policy", headers=headers,
                        json={"remind_after_minutes": 1, "remind_roles": ["engineer", "owner"]})
    assert answer.status_code == 200
    assert answer.get_json() == {"remind_after_minutes": 1,
                                 "remind_roles": ["owner", "engineer"]}
    kept = client.put("/api/v1/account/escalation-policy", headers=headers,
                      json={"remind_after_minutes": 0})
    assert kept.get_json() == {"remind_after_minutes": 0, "remind_roles": ["owner", "engineer"]}
    for body in ({"remind_after_minutes": 1441}, {"remind_after_minutes": -1},
                 {"remind_after_minutes": "5"}, {"remind_after_minutes": 5.5},
                 {"remind_after_minutes": 5, "remind_roles": ["viewer"]},
                 {"remind_after_minutes": 5, "remind_roles": []}, {}):
        assert_error_shape(client.put("/api/v1/account/escalation-policy", headers=headers,
                                      json=body), 422, "validation_error")
    assert client.get("/api/v1/account/escalation-policy", headers=headers).get_json() == \
        {"remind_after_minutes": 0, "remind_roles": ["owner", "engineer"]}


def test_each_account_sees_only_its_own_settings(client, tenant, other_tenant):
    client.put("/api/v1/account/chat", headers=tenant.headers("admin"),
               json={"provider": "slack", "webhook_url": SLACK_URL})
    client.put("/api/v1/account/escalation-policy", headers=tenant.headers("admin"),
               json={"remind_after_minutes": 3})
    assert client.get("/api/v1/account/chat", headers=other_tenant.headers()).get_json()[
        "provider"] == "none"
    assert client.get("/api/v1/account/escalation-policy", headers=other_tenant.headers()
                      ).get_json()["remind_after_minutes"] == 15
