"""Token checks asked at the same moment are answered together (webapp.token_lookups): the
reconnect storm after a deploy is a few statements on one connection, not one pooled
connection per opening stream."""
import threading

import pytest
from sqlalchemy import event

from tests.conftest import app_config
from webapp import create_app, token_lookups
from webapp.auth import token_digest
from webapp.extensions import db


def digest(app, token: str) -> str:
    with app.app_context():
        return token_digest(token)


def test_callers_at_the_same_moment_share_a_statement_and_each_gets_its_own_answer(
        app, tenant, other_tenant, client):
    client.post("/api/v1/auth/logout", headers=other_tenant.headers("admin"))
    asked = {role: digest(app, tenant.tokens[role]) for role in tenant.tokens}
    asked["revoked"] = digest(app, other_tenant.tokens["admin"])
    asked["unknown"] = digest(app, "no-such-token")
    lookups = token_lookups.TokenLookups(app)
    statements, started, release = [], threading.Event(), threading.Event()

    def counted(conn, cursor, statement, *args):
        if "api_tokens" in statement:
            statements.append(statement)
            started.set()
            release.wait(10)   # the first check is slow: everyone else queues behind it

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", counted)
    answers: dict[str, object] = {}
    try:
        first = threading.Thread(target=lambda: answers.update(
            first=lookups.caller(asked["owner"])))
        first.start()
        assert started.wait(10)
        callers = [threading.Thread(target=lambda name=name, value=value: answers.update(
            {name: lookups.caller(value)})) for name, value in asked.items()]
        for caller in callers:
            caller.start()
        while len(lookups._queue) < len(callers):   # all of them wait for the next check
            threading.Event().wait(0.01)
        release.set()
        for thread in (first, *callers):
            thread.join(10)
    finally:
        event.remove(engine, "before_cursor_execute", counted)
    assert len(statements) == 2   # the slow first check, then one for all the others
    users = tenant.users
    assert answers["first"] == answers["owner"] == token_lookups.Caller(
        users["owner"]["id"], tenant.account_id, "owner")
    assert answers["engineer"].is_senior and not answers["engineer"].is_admin
    assert not answers["viewer"].is_senior
    assert answers["revoked"] is None and answers["unknown"] is None


def test_a_check_the_database_cannot_answer_is_unavailable_for_every_caller(app_env):
    away = create_app(app_config(app_env, SQLALCHEMY_DATABASE_URI="postgresql://nobody@127.0.0.1:9/none",
                                 SQLALCHEMY_ENGINE_OPTIONS={"connect_args": {
                                     "connect_timeout": 1}}))
    lookups = token_lookups.lookups(away)
    for _ in range(2):   # and the next caller leads again: nobody is left waiting
        with pytest.raises(token_lookups.Unavailable):
            lookups.caller("a" * 64)
    assert lookups._leading is False and lookups._queue == []


def test_a_stream_opened_with_a_revoked_or_viewer_token_is_refused(client, tenant):
    path = "/api/v1/ai-sessions/escalations/stream"
    assert client.get(path, headers=tenant.headers("viewer")).status_code == 403
    client.post("/api/v1/auth/logout", headers=tenant.headers("engineer"))
    refused = client.get(path, headers=tenant.headers("engineer"))
    assert refused.status_code == 401 and refused.json["error"]["code"] == "unauthorized"
