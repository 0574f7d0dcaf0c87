"""Builders of test data: accounts with a user of every role, AI sessions and escalations.

Plain functions; the fixtures that hand them to tests (`make_tenant`, `tenant`) are in
tests/conftest.py. Sessions and handoffs are made through the HTTP API, with the test app's Flask
client or an httpx client: one with a base URL of its own, or given `base_url=`."""
from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

from tests.conftest import TEST_PASSWORD, app_config
from webapp import create_app
from webapp.auth import issue_token
from webapp.config import broker_is_amqp
from webapp.extensions import db
from webapp.models import Account, User
from webapp.passwords import hash_password

ROLES = ("owner", "admin", "engineer", "viewer")
SESSION_TITLE = "Exchange mail stuck"
SESSION_PROBLEM = "Outbound mail queued since 9am"
SESSION_CLIENT = "Contoso"
SESSION_TICKET = "T-100"
TRANSCRIPT = (("engineer", "Already restarted the transport service"),)
HANDOFF_NOTE = "Need someone with Exchange admin rights"
UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"
UNREACHABLE_AMQP = "amqp://guest:guest@127.0.0.1:1//"


@dataclass
class Tenant:
    """An account with one user per role; `headers(role)` logs that user in."""
    account_id: int
    users: dict[str, object] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)

    def headers(self, role: str = "owner") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}


# ---- accounts and users, written straight to the database ------------------------------------

def create_account(name: str) -> int:
    """An account (in the current app context, flushed not committed); its id."""
    account = Account(name=name)
    db.session.add(account)
    db.session.flush()
    return account.id


def create_user(account_id: int, label: str, number: int,
                password_hash: str | None = None) -> tuple[dict, str]:
    """A user of the account (current app context, flushed not committed), logged in: its
    {"id", "email", "name"} and its token. `label` is the role, with a digit to tell several of
    one role apart ("engineer2"); `number` makes the email and the name unique."""
    user = User(account_id=account_id, email=f"{label}{number}@{account_id}.example",
                name=f"{label.title()} {number}", role=label.rstrip("0123456789"),
                password_hash=password_hash or hash_password(TEST_PASSWORD))
    db.session.add(user)
    db.session.flush()
    token, _ = issue_token(user)
    return {"id": user.id, "email": user.email, "name": user.name}, token


def create_tenant(app, name: str = "Acme MSP", extra_engineers: int = 0,
                  numbers: Iterator[int] | None = None) -> Tenant:
    """An account with an owner, an admin, an engineer and a viewer (plus `extra_engineers`
    more: engineer2, engineer3, ...), each logged in, committed. `numbers` numbers the users
    (share one iterator between the tenants of a test to keep their names apart)."""
    numbers = numbers if numbers is not None else itertools.count(1)
    with app.app_context():
        tenant = Tenant(account_id=create_account(name))
        labels = [*ROLES, *(f"engineer{i}" for i in range(2, extra_engineers + 2))]
        password_hash = hash_password(TEST_PASSWORD)
        for label in labels:
            tenant.users[label], tenant.tokens[label] = create_user(
                tenant.account_id, label, next(numbers), password_hash)
        db.session.commit()
        return tenant


# ---- sessions and handoffs, through the HTTP API ---------------------------------------------

def _json(response):
    """The JSON of a Flask test client's answer or of an httpx one."""
    get_json = getattr(response, "get_json", None)
    return get_json() if get_json else response.json()


def make_session(client, tenant, role: str = "engineer", *, base_url: str = "",
                 title: str = SESSION_TITLE, problem: str = SESSION_PROBLEM,
                 client_name: str = SESSION_CLIENT, psa_ticket_id: str | None = SESSION_TICKET,
                 messages: tuple[tuple[str, str], ...] = TRANSCRIPT) -> int:
    """An AI session of `role`'s user with its transcript (`messages`: (author, content)
    pairs); its id. psa_ticket_id=None makes one without a PSA ticket."""
    headers = tenant.headers(role)
    body = {"title": title, "problem": problem, "client_name": client_name}
    if psa_ticket_id is not None:
        body["psa_ticket_id"] = psa_ticket_id
    session = client.post(base_url + "/api/v1/ai-sessions", json=body, headers=headers)
    assert session.status_code == 201, session.text
    session_id = _json(session)["id"]
    for author, content in messages:
        answer = client.post(f"{base_url}/api/v1/ai-sessions/{session_id}/messages",
                             json={"role": author, "content": content}, headers=headers)
        assert answer.status_code == 201, answer.text
    return session_id


def post_handoff(client, tenant, session_id: int, role: str = "engineer", *,
                 base_url: str = "", **fields):
    """POST the session's handoff as `role`'s user; the answer, whatever it is. `fields`
    (intent, note, urgency, ...) go into the body, over an escalation with a note."""
    body = {"intent": "escalate", "note": HANDOFF_NOTE, **fields}
    return client.post(f"{base_url}/api/v1/ai-sessions/{session_id}/handoff", json=body,
                       headers=tenant.headers(role))


def escalate(client, tenant, role: str = "engineer", *, base_url: str = "",
             title: str = SESSION_TITLE, problem: str = SESSION_PROBLEM,
             client_name: str = SESSION_CLIENT, psa_ticket_id: str | None = SESSION_TICKET,
             messages: tuple[tuple[str, str], ...] = TRANSCRIPT, **handoff_fields) -> dict:
    """A new session (see make_session) handed off by `role`'s user; the handoff as the API
    answered it. `handoff_fields` (note, urgency, intent="park", ...) go into its body."""
    session_id = make_session(client, tenant, role, base_url=base_url, title=title,
                              problem=problem, client_name=client_name,
                              psa_ticket_id=psa_ticket_id, messages=messages)
    response = post_handoff(client, tenant, session_id, role, base_url=base_url,
                            **handoff_fields)
    assert response.status_code == 201, response.text
    return _json(response)


def app_without_broker(app_env: dict[str, str]):
    """An app whose Redis and broker (of the run's kind: Redis, or RabbitMQ) are unreachable:
    what it writes is never dispatched."""
    unreachable = UNREACHABLE_AMQP if broker_is_amqp(app_env["CELERY_BROKER_URL"]) \
        else UNREACHABLE_REDIS
    return create_app(app_config(app_env, REDIS_URL=UNREACHABLE_REDIS,
                                 CELERY_BROKER_URL=unreachable))


def undispatched_handoff(app_env: dict[str, str], tenant, **fields) -> int:
    """An escalation (see escalate) whose dispatch never reached a broker: only beat will find
    its rows, and no worker touches them meanwhile. Its id."""
    return escalate(app_without_broker(app_env).test_client(), tenant, **fields)["id"]
