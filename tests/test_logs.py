"""Structured logs: one JSON line per record from web, worker and beat; the request id of a
POST on every line of the tasks it caused; no secret or message body in any line."""
import json
import os
import time

import httpx
import pytest

from tests.conftest import TEST_PASSWORD, _wait_worker_ready, artifacts_dir, wait_for
from tests.factories import make_session
from tests.servers.beat import BeatProcess
from tests.servers.chat import ChatServer
from tests.servers.psa import CW_PRIVATE_KEY, CW_PUBLIC_KEY
from tests.servers.web import WebProcess
from webapp import logs
from webapp.extensions import db
from webapp.models import Delivery

NOTE = "NOTE-BODY-7f3a the DC lost its trust relationship"
TRANSCRIPT = "TRANSCRIPT-BODY-91c2 rebooted twice already"


def json_lines(path) -> list[dict]:
    """Every line of the log as JSON; a line that is not JSON fails the test."""
    lines = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            lines.append(json.loads(line))
        except ValueError:
            pytest.fail(f"{path.name}:{number} is not a JSON line: {line[:200]}")
    return lines


def test_request_ids_are_accepted_made_and_echoed(client):
    mine = client.get("/healthz", headers={"X-Request-ID": "ops-check.1_A"})
    assert mine.headers["X-Request-ID"] == "ops-check.1_A"
    for bad in ("has space", "x" * 129, "semi;colon", ""):
        made = client.get("/healthz", headers={"X-Request-ID": bad})
        assert made.headers["X-Request-ID"] != bad and len(made.headers["X-Request-ID"]) == 32
    assert client.get("/api/v1/nothing-here").headers["X-Request-ID"]
    assert client.post("/api/v1/auth/login", data=b"x" * 300_000,
                       headers={"Content-Type": "application/json"}).headers["X-Request-ID"]
    one, two = client.get("/healthz"), client.get("/healthz")
    assert one.headers["X-Request-ID"] != two.headers["X-Request-ID"]


def test_a_posts_request_id_is_on_the_worker_lines_of_every_task_it_caused_and_no_secret_is(
        app_env, make_tenant, private_worker, psa_server):
    worker, queue_app = private_worker("logs", start_now=False)
    worker.log_path.write_text("")   # this run's lines only
    worker.start()
    _wait_worker_ready(queue_app)
    web_log = artifacts_dir() / "web-logs.log"
    web_log.write_text("")
    web = WebProcess({**app_env, "CELERY_QUEUE": "logs", "ACCESS_LOG": "-"}, web_log).start()
    tenant = make_tenant("Logs MSP")
    request_id = "req-logs-5d1e"
    try:
        with ChatServer() as chat, httpx.Client(base_url=web.base_url, timeout=10) as http:
            login = http.post("/api/v1/auth/login", json={
                "email": tenant.users["engineer"]["email"], "password": TEST_PASSWORD})
            assert login.status_code == 200
            token = login.json()["access_token"]
            admin = tenant.headers("admin")
            assert http.put("/api/v1/account/chat", headers=admin, json={
                "provider": "slack", "webhook_url": chat.slack_url}).status_code == 200
            assert http.put("/api/v1/account/psa", headers=admin, json={
                "provider": "connectwise",
                **psa_server.settings("connectwise")}).status_code == 200
            session_id = make_session(http, tenant, psa_ticket_id="1001",
                                      messages=(("engineer", TRANSCRIPT),))
            answer = http.post(f"/api/v1/ai-sessions/{session_id}/handoff",
                               json={"intent": "escalate", "note": NOTE},
                               headers={"Authorization": f"Bearer {token}",
                                        "X-Request-ID": request_id})
            assert answer.status_code == 201 and answer.headers["X-Request-ID"] == request_id
            handoff_id = answer.json()["id"]

            def settled():
                with queue_app.app_context():
                    rows = db.session.scalars(db.select(Delivery).where(
                        Delivery.handoff_id == handoff_id)).all()
                    return rows if rows and all(r.status == "sent" for r in rows) else None
            rows = wait_for(settled, 40, message="every delivery of the escalation sent")
            assert {row.channel for row in rows} == {"assessment", "psa", "email", "chat"}
            secrets = {"password": TEST_PASSWORD, "login token": token,
                       "API token": tenant.tokens["admin"], "webhook URL": chat.slack_url,
                       "webhook token": chat.slack_url.rsplit("/", 1)[1],
                       "PSA private key": CW_PRIVATE_KEY, "PSA public key": CW_PUBLIC_KEY,
                       "escalation note": NOTE, "transcript": TRANSCRIPT}
            time.sleep(0.5)   # the worker's last lines are written after the rows settle
    finally:
        web.stop()

    worker_lines = json_lines(worker.log_path)
    web_lines = json_lines(web_log)
    caused = [line for line in worker_lines if line.get("request_id") == request_id]
    assert caused, "no worker line carries the POST's request id"
    assert {line.get("handoff_id") for line in caused} == {handoff_id}
    channels = {line.get("channel") for line in caused if line.get("delivery_id")}
    assert channels == {"assessment", "psa", "email", "chat"}, channels
    row_ids = {row.id for row in rows}
    assert {line["delivery_id"] for line in caused if line.get("delivery_id")} == row_ids
    assert any(line.get("request_id") == request_id and line.get("handoff_id") == handoff_id
               for line in web_lines), "the web's line for the POST"
    for line in worker_lines + web_lines:
        assert {"time", "level", "logger", "message"} <= set(line), line
    for name, path in (("worker", worker.log_path), ("web", web_log)):
        text = path.read_text(errors="replace")
        for what, secret in secrets.items():
            assert secret not in text, f"the {what} is in the {name} log"


def test_beat_writes_json_lines(app_env):
    env = {**os.environ, **app_env, "CELERY_QUEUE": "beat-logs", "BEAT_REMIND_SECONDS": "1",
           "BEAT_REDELIVER_SECONDS": "3600"}
    beat = BeatProcess(env, "logs")
    beat.start()
    try:
        wait_for(lambda: "maintenance.remind_unclaimed" in beat.log_path.read_text(), 30,
                 message="beat to send its first job")
    finally:
        beat.stop()
    lines = json_lines(beat.log_path)
    assert any(line["logger"].startswith("celery.beat") for line in lines)


def test_text_format_for_a_terminal_keeps_the_ids():
    import logging
    record = logging.LogRecord("webapp.x", logging.INFO, __file__, 1, "hello", None, None)
    with logs.bound(request_id="r1", handoff_id=7):
        logs.ContextFilter().filter(record)
    line = logs.formatter("text").format(record)
    assert line.endswith("INFO webapp.x: hello [request_id=r1 handoff_id=7]")
    as_json = json.loads(logs.formatter("json").format(record))
    assert as_json["request_id"] == "r1" and as_json["handoff_id"] == 7
