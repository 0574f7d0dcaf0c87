"""schemathesis against the app's own OpenAPI document, with real Postgres and Redis.

Every operation (but the endless live stream) is driven with valid and with schema-violating
requests, as an engineer and as an owner, and every answer is checked against the document:
no 5xx, a documented status, content type and body (error answers included), valid requests
accepted and invalid ones refused. FUZZ_EXAMPLES sets the examples per operation and mode
(30 by default; 500 before a release, see the README); generation is derandomized, so a run
is repeatable.

No fuzzed setting is ever called: the app under test enqueues to a queue of its own that no
worker consumes (purged at the end), and the URLs generated for PSA and chat settings are
loopback ones on the discard port.
"""
from __future__ import annotations

import os
import re
import secrets
import time
from collections import Counter

import pytest
import redis as redis_lib
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS as CHECK_REGISTRY

from tests.conftest import app_config, purge_queues
from tests.factories import escalate, make_session
from webapp import create_app
from webapp.auth import issue_token
from webapp.config import broker_is_amqp, queue_name
from webapp.extensions import db
from webapp.models import Delivery, User

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES") or 30)
ROLES = ("engineer", "owner")
CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_schema_conformance", "response_headers_conformance",
          "negative_data_rejection", "positive_data_acceptance")

# URLs the generator may put in PSA and chat settings: loopback only, a port nothing serves
schemathesis.openapi.format("url", st.sampled_from(
    ["http://127.0.0.1:9/", "https://127.0.0.1:9/psa", "http://localhost:9/x"]))


@pytest.fixture
def fuzz_app(app, app_env):
    """The app on a queue of its own: what the fuzzed requests enqueue stays there, untaken,
    and is purged afterwards."""
    queue = f"fuzz-{secrets.token_hex(4)}"
    fuzzed = create_app(app_config(app_env, CELERY_QUEUE=queue))
    yield fuzzed
    purge_queues(app_env["CELERY_BROKER_URL"],
                 [queue, queue_name(queue, "psa"), queue_name(queue, "ai")])


@pytest.fixture
def api_schema(fuzz_app):
    config = schemathesis.Config.from_dict({
        "seed": 15,
        # the bearer header is the test's own (a valid token of each role), never fuzzed
        "generation": {"mode": "all", "max-examples": FUZZ_EXAMPLES,
                       "with-security-parameters": False},
        "phases": {"stateful": {"enabled": False}},
    })
    return schemathesis.openapi.from_wsgi("/api/v1/openapi.json", fuzz_app, config=config)


@pytest.fixture
def objects(fuzz_app, tenant) -> list[int]:
    """Ids that name real objects of the caller's account: sessions, open escalations,
    parked handoffs, their deliveries, users; valid path ids are folded onto them."""
    client = fuzz_app.test_client()
    ids = []
    for role in ROLES:
        for handoff in (escalate(client, tenant, role), escalate(client, tenant, role,
                                                                 intent="park")):
            ids += [handoff["id"], handoff["session_id"]]
        ids.append(make_session(client, tenant, role))
    with fuzz_app.app_context():
        ids += db.session.scalars(db.select(Delivery.id)).all()
    return [*ids, *(user["id"] for user in tenant.users.values())]


@pytest.fixture
def cursor(fuzz_app, tenant, objects) -> str:
    """A queue cursor the server gave: valid cursors are those (any other is 422)."""
    page = fuzz_app.test_client().get("/api/v1/ai-sessions/escalations?limit=1&status=all",
                                      headers=tenant.headers("owner"))
    assert page.status_code == 200 and page.get_json()["next_cursor"], page.text
    return page.get_json()["next_cursor"]


STREAM = "/api/v1/ai-sessions/escalations/stream"   # endless: its errors are tested apart
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)


def fresh_token(app, tenant, role: str) -> str:
    with app.app_context():
        token, _ = issue_token(db.session.get(User, tenant.users[role]["id"]))
        db.session.commit()
    return token


@pytest.mark.timeout(120 + 2 * FUZZ_EXAMPLES)   # about half a second per example and mode
def test_every_answer_is_documented_and_no_request_makes_a_5xx(api_schema, fuzz_app, tenant,
                                                               objects, cursor):
    started = time.monotonic()
    checks = [CHECK_REGISTRY.get_one(name) for name in CHECKS]
    requests: Counter = Counter()
    failures: list[str] = []
    nothing_to_negate: list[str] = []

    def call(case) -> None:
        if case.meta and case.meta.generation.mode.is_positive:
            # most valid ids name a real object of the account, the rest stay as generated;
            # a valid cursor is one the server gave
            case.path_parameters = {
                name: objects[value % len(objects)] if isinstance(value, int) and value % 4
                else value for name, value in (case.path_parameters or {}).items()}
            if (case.query or {}).get("cursor"):
                case.query = {**case.query, "cursor": cursor}
        for role in ROLES:
            # a fresh token each time: a fuzzed logout revokes only its own
            token = fresh_token(fuzz_app, tenant, role)
            requests[case.meta.generation.mode.value if case.meta else "explicit"] += 1
            response = case.call(headers={"Authorization": f"Bearer {token}"})
            case.validate_response(response, checks=checks)

    operations = [result.ok() for result in api_schema.get_all_operations()]
    operations = [operation for operation in operations if operation.path != STREAM]
    for operation in operations:
        for mode in MODES:
            fuzz = settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True,
                            database=None, suppress_health_check=list(HealthCheck))(
                given(case=operation.as_strategy(generation_mode=mode))(call))
            try:
                fuzz()
            except Unsatisfiable:
                if mode is not GenerationMode.NEGATIVE:
                    raise
                nothing_to_negate.append(operation.label)   # no parameters, no body
            except (Exception, BaseExceptionGroup) as error:   # every operation's is reported
                failures.append(f"{operation.label} ({mode.value}): {error}"[:3000])
    figures = (f"{len(operations)} operations, {sum(requests.values())} requests "
               f"({dict(requests)}) as {' and '.join(ROLES)}, up to {FUZZ_EXAMPLES} examples "
               f"per operation and mode ({len(nothing_to_negate)} operations take no input "
               f"to make invalid), {time.monotonic() - started:.1f} s")
    print(f"\nfuzz: {figures}")
    assert not failures, f"{figures}; {len(failures)} failing:\n" + "\n\n".join(failures)
    assert len(operations) >= 23 and sum(requests.values()) >= 20 * len(operations), figures
    if not broker_is_amqp(fuzz_app.config["CELERY_BROKER_URL"]):
        # what the requests enqueued went to the fuzz app's own queue, nowhere a worker reads
        queued = redis_lib.Redis.from_url(fuzz_app.config["CELERY_BROKER_URL"]).llen(
            fuzz_app.config["CELERY_QUEUE"])
        assert queued > 0, figures


def test_the_derived_error_answers_are_real_and_documented(api_schema, fuzz_app, tenant,
                                                           objects):
    """No token, an oversized body, an overlong query string: answered as documented by
    every operation (the fuzzing above sends a valid token and bodies within the limits)."""
    checks = [CHECK_REGISTRY.get_one(name) for name in CHECKS[:5]]
    limit = fuzz_app.config["MAX_CONTENT_LENGTH"]
    answered: Counter = Counter()
    for result in api_schema.get_all_operations():
        operation = result.ok()
        path_parameters = {name: objects[0] for name in re.findall(r"{(\w+)}", operation.path)}
        token = {"Authorization": f"Bearer {fresh_token(fuzz_app, tenant, 'owner')}"}
        probes = [({"Content-Type": "application/json"}, None, None, 413),
                  ({**token}, None, {"q": "x" * fuzz_app.config["MAX_QUERY_STRING_BYTES"]},
                   422)]
        if operation.path != "/api/v1/auth/login":
            probes.append(({}, None, None, 401))
            probes.append(({"Authorization": "Bearer not-a-token"}, None, None, 401))
        for headers, _body, query, status in probes:
            case = operation.Case(path_parameters=path_parameters, headers=headers, query=query)
            body = "x" * (limit + 1) if status == 413 else None
            response = case.call(data=body) if body else case.call()
            assert response.status_code == status, (operation.label, response.text[:300])
            case.validate_response(response, checks=checks)
            answered[status] += 1
    print(f"\nderived answers: {dict(answered)}")
    assert answered[401] >= 2 * 23 and answered[413] >= 24 and answered[422] >= 24
