"""Operator commands."""
import json


def test_create_account_prints_ids_and_the_owner_can_log_in(app, client):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["create-account", "--name", "Initech", "--owner-email",
                                 "boss@initech.example", "--owner-name", "Bill",
                                 "--owner-password", "tps-reports-1"])
    assert result.exit_code == 0, result.output
    ids = json.loads(result.output.strip().splitlines()[-1])
    assert ids["account_id"] > 0 and ids["owner_id"] > 0
    login = client.post("/api/v1/auth/login",
                        json={"email": "boss@initech.example", "password": "tps-reports-1"})
    assert login.status_code == 200
    assert login.get_json()["user"]["role"] == "owner"


def test_create_account_refuses_a_taken_email(app):
    runner = app.test_cli_runner()
    args = ["create-account", "--name", "A", "--owner-email", "dup@x.example", "--owner-name",
            "A", "--owner-password", "password-1"]
    assert runner.invoke(args=args).exit_code == 0
    again = runner.invoke(args=args)
    assert again.exit_code != 0
    assert "already exists" in again.output


def test_rotate_secrets_moves_every_stored_secret_to_the_first_key(app_env, tenant):
    """After rotation the old key can be retired: the secrets open under the new key
    alone."""
    from cryptography.fernet import Fernet

    from tests.conftest import app_config
    from webapp import create_app
    from webapp.extensions import db
    from webapp.models import Account
    from webapp.services import psa_settings
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings = {"site_url": "https://na.myconnectwise.net", "company_id": "acme",
                "public_key": "pub-123", "private_key": "priv-secret-456", "client_id": "cid"}
    before = create_app(app_config(app_env, ENCRYPTION_KEY=old))
    with before.app_context():
        psa_settings.save(db.session.get(Account, tenant.account_id), "connectwise", settings)
        db.session.commit()
    both = create_app(app_config(app_env, ENCRYPTION_KEY=f"{new},{old}"))
    result = both.test_cli_runner().invoke(args=["rotate-secrets"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1]) == {"rotated": 1,
                                                                  "unreadable": 0}
    only_new = create_app(app_config(app_env, ENCRYPTION_KEY=new))
    with only_new.app_context():
        provider, loaded = psa_settings.load(tenant.account_id)
    assert provider == "connectwise" and loaded["private_key"] == "priv-secret-456"
    with before.app_context():    # the old key alone no longer opens them
        try:
            psa_settings.load(tenant.account_id)
            opened = True
        except psa_settings.UnreadableSecrets:
            opened = False
    assert not opened


def test_old_expired_and_revoked_tokens_are_purged_and_live_ones_kept(app, tenant):
    from datetime import timedelta

    from tasks import maintenance
    from webapp.extensions import db
    from webapp.models import ApiToken
    from webapp.models.base import utcnow
    with app.app_context():
        tokens = list(db.session.scalars(db.select(ApiToken).order_by(ApiToken.id)))
        long_ago = utcnow() - timedelta(days=31)
        tokens[0].expires_at = long_ago                 # expired a month ago
        tokens[1].revoked_at = long_ago                 # revoked a month ago
        tokens[2].revoked_at = utcnow() - timedelta(days=1)   # recently: kept for now
        db.session.commit()
        kept = {t.id for t in tokens[2:]}
        assert maintenance.purge_tokens.run() == 2
        assert {t.id for t in db.session.scalars(db.select(ApiToken))} == kept


def test_sql_parameters_never_reach_error_messages(app):
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from webapp.extensions import db
    with app.app_context():
        try:
            db.session.execute(text("SELECT CAST(:value AS text), 1 / 0"),
                               {"value": "token-secret-9f8e7d"})
            raised = None
        except DBAPIError as error:
            raised = str(error)
        db.session.rollback()
    assert raised is not None and "token-secret-9f8e7d" not in raised
