"""Hostile request bytes answer 4xx in the error shape, never 5xx, and nothing is read past
the body limit."""
import json
import socket

import pytest

from tests.conftest import app_config, artifacts_dir
from tests.helpers import assert_error_shape
from webapp import create_app


def post_raw(client, path, data, headers):
    return client.post(path, data=data, headers={**headers, "Content-Type": "application/json"})


@pytest.mark.parametrize("body", [
    "[" * 100_000 + "]" * 100_000,                        # past the parser's recursion
    '{"title": ' + "[" * 40 + '"x"' + "]" * 40 + "}",     # past the API's own depth
    '{"title": "\\ud800 lone surrogate"}',
    '{"title": "\\udfff"}',
    '{"title": "t", "problem": 1' + "0" * 5000 + "}",     # past int's digit limit
    '{"title": "t", "problem": 1e999}',
    '{"title": "t", "problem": NaN}',
    '{"title": "t", "problem": -Infinity}',
])
def test_malformed_json_bodies_are_400_never_500(client, tenant, body):
    response = post_raw(client, "/api/v1/ai-sessions", body.encode(), tenant.headers())
    assert_error_shape(response, 400, "bad_request")


def test_invalid_utf8_is_400(client, tenant):
    response = post_raw(client, "/api/v1/ai-sessions", b'{"title": "\xff\xfe"}',
                        tenant.headers())
    assert_error_shape(response, 400, "bad_request")


def test_a_body_past_the_limit_is_413_on_every_route_login_included(client, tenant):
    big = b'{"email": "a@b.example", "password": "' + b"x" * (300 * 1024) + b'"}'
    for path, headers in (("/api/v1/auth/login", {}),
                          ("/api/v1/ai-sessions", tenant.headers()),
                          ("/api/v1/handoffs/1/claim", tenant.headers())):
        response = post_raw(client, path, big, headers)
        assert_error_shape(response, 413, "payload_too_large")
        assert response.headers["Connection"] == "close"


def test_the_body_limit_is_configurable(app_env, tenant):
    roomy = create_app(app_config(app_env, MAX_CONTENT_LENGTH=1024 * 1024)).test_client()
    body = json.dumps({"title": "t", "problem": "x" * 19_000}).encode() + b" " * 400_000
    response = post_raw(roomy, "/api/v1/ai-sessions", body, tenant.headers())
    assert response.status_code == 201, response.get_json()


def test_a_long_query_string_is_422_from_the_app(client, tenant):
    response = client.get("/api/v1/ai-sessions/escalations?cursor=" + "a" * 5000,
                          headers=tenant.headers())
    assert_error_shape(response, 422, "validation_error")


def test_a_session_transcript_is_capped_in_messages_and_characters(app_env, tenant):
    small = create_app(app_config(app_env, SESSION_MAX_MESSAGES=3,
                                  SESSION_MAX_CHARACTERS=50)).test_client()
    headers = tenant.headers("engineer")
    session = small.post("/api/v1/ai-sessions", json={"title": "t"}, headers=headers)
    path = f"/api/v1/ai-sessions/{session.get_json()['id']}/messages"
    assert small.post(path, json={"role": "engineer", "content": "x" * 40},
                      headers=headers).status_code == 201
    over = small.post(path, json={"role": "engineer", "content": "y" * 11}, headers=headers)
    assert_error_shape(over, 409, "session_full")
    for _ in range(2):
        assert small.post(path, json={"role": "assistant", "content": "ok"},
                          headers=headers).status_code == 201
    assert_error_shape(small.post(path, json={"role": "engineer", "content": "z"},
                                  headers=headers), 409, "session_full")


def test_the_snapshot_is_bounded_and_the_queue_carries_only_its_summary(app_env, tenant):
    bounded = create_app(app_config(app_env, SNAPSHOT_MAX_MESSAGES=5,
                                    SNAPSHOT_MAX_CHARACTERS=10_000,
                                    CELERY_BROKER_URL="redis://127.0.0.1:1/0")).test_client()
    headers = tenant.headers("engineer")
    session_id = bounded.post("/api/v1/ai-sessions", json={"title": "long one"},
                              headers=headers).get_json()["id"]
    for n in range(8):
        bounded.post(f"/api/v1/ai-sessions/{session_id}/messages",
                     json={"role": "engineer", "content": f"message {n} " + "x" * 3000},
                     headers=headers)
    handoff = bounded.post(f"/api/v1/ai-sessions/{session_id}/handoff",
                           json={"intent": "escalate", "note": "help"}, headers=headers)
    assert handoff.status_code == 201, handoff.get_json()
    full = bounded.get(f"/api/v1/handoffs/{handoff.get_json()['id']}", headers=headers)
    snapshot = full.get_json()["snapshot"]
    assert snapshot["message_count"] == 8
    kept = [m["content"].split(" x")[0] for m in snapshot["messages"]]
    assert kept == ["message 5", "message 6", "message 7"]     # the newest, within 10,000
    assert snapshot["messages_omitted"] == 5
    listed = bounded.get("/api/v1/ai-sessions/escalations", headers=tenant.headers())
    [item] = listed.get_json()["items"]
    assert "messages" not in item["snapshot"]
    assert item["snapshot"]["message_count"] == 8 and "captured_at" in item["snapshot"]


# ---- against the web role as the Procfile runs it --------------------------------------------

@pytest.fixture
def web(app, app_env):
    from tests.servers.web import WebProcess
    process = WebProcess(app_env, artifacts_dir() / "web-hostile.log").start()
    yield process
    process.stop()


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))


def gunicorn_worker(web) -> int:
    from bench.harness import children_of
    return children_of(web.process.pid)[0]


def test_a_20_mb_login_body_is_refused_without_being_read(web):
    worker = gunicorn_worker(web)
    before = rss_kib(worker)
    with socket.create_connection(("127.0.0.1", web.port), timeout=10) as sock:
        sock.sendall(b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 20971520\r\n\r\n")
        sock.sendall(b'{"email": "a@b.example", "password": "' + b"x" * 65536)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), head
    assert json.loads(body)["error"]["code"] == "payload_too_large"
    after = rss_kib(worker)
    print(f"web worker RSS before {before} KiB, after a 20 MB body {after} KiB")
    assert after - before < 10 * 1024, (before, after)   # the 20 MB were never taken in


def test_a_query_past_gunicorns_default_line_limit_is_the_apps_422(web, tenant):
    import httpx
    response = httpx.get(f"{web.base_url}/api/v1/ai-sessions/escalations",
                         params={"cursor": "a" * 6000}, headers=tenant.headers(), timeout=10)
    assert response.status_code == 422, response.text[:200]
    assert response.json()["error"]["code"] == "validation_error"
    assert httpx.get(f"{web.base_url}/readyz", timeout=10).status_code == 200


def test_hostile_bodies_through_gunicorn_are_4xx_and_the_process_stays_ready(web):
    import httpx
    bodies = [b"[" * 200_000 + b"]" * 200_000, b'{"email": "\\ud800", "password": "\ud800"}',
              b'{"email": "a@b.c", "password": 1' + b"9" * 100_000 + b"}", b"\xff\xfe\x00",
              b'{"email": NaN, "password": Infinity}']
    with httpx.Client(base_url=web.base_url, timeout=10) as http:
        for body in bodies:
            response = http.post("/api/v1/auth/login", content=body,
                                 headers={"Content-Type": "application/json"})
            assert 400 <= response.status_code < 500, (body[:40], response.status_code)
            assert response.json()["error"]["code"] in ("bad_request", "payload_too_large")
        assert http.get("/readyz").status_code == 200
