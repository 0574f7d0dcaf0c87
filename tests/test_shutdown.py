"""Graceful shutdown: a worker given SIGTERM finishes or hands back its tasks and nothing is
lost; a web process given SIGTERM ends its open streams at once and exits without waiting out
its graceful timeout."""
import signal
import threading
import time

import httpx

from tests.conftest import _wait_worker_ready, artifacts_dir, wait_for
from tests.factories import escalate
from tests.helpers import email_rows
from tests.servers.web import WebProcess

STREAM = "/api/v1/ai-sessions/escalations/stream"


def test_a_worker_stopped_with_sigterm_mid_fan_out_loses_nothing(
        app_env, make_tenant, private_worker, smtp_server):
    first, queue_app = private_worker("sigterm")
    tenant = make_tenant("Sigterm MSP", extra_engineers=10)
    smtp_server.handler.stall_rcpt_seconds = 0.4   # the fan-out takes seconds: stop it midway
    try:
        handoff = escalate(queue_app.test_client(), tenant)
        wait_for(lambda: smtp_server.about(handoff["id"]), 30, message="the first email")
        first.process.send_signal(signal.SIGTERM)
        code = first.process.wait(60)
    finally:
        smtp_server.handler.stall_rcpt_seconds = 0.0
    sent_before = len(smtp_server.about(handoff["id"]))
    log = first.log_path.read_text(errors="replace")
    assert code == 0, log[-2000:]
    assert "Warm shutdown" in log or "warm shutdown" in log.lower()

    second, _ = private_worker("sigterm", start_now=False)
    second.start()
    _wait_worker_ready(queue_app)
    rows = wait_for(lambda: (lambda found: found if found and all(
        r.status == "sent" for r in found) else None)(email_rows(queue_app, handoff["id"])), 60,
        message=lambda: [(r.recipient, r.status) for r in email_rows(queue_app, handoff["id"])])
    recipients = sorted(r.recipient for r in rows)
    assert len(recipients) == 12
    received = sorted(a.lower() for m in smtp_server.about(handoff["id"]) for a in m.rcpt_tos)
    assert received == recipients, (
        f"{sent_before} of 12 emails went out before SIGTERM; each recipient must get one")


def test_a_web_process_with_100_open_streams_ends_them_at_once_on_sigterm(app_env, tenant):
    log_path = artifacts_dir() / "web-sigterm.log"
    log_path.write_text("")
    web = WebProcess({**app_env, "SSE_MAX_STREAMS_PER_USER": "1000",
                      "SSE_MAX_STREAMS_PER_ACCOUNT": "1000", "LOG_FORMAT": "text"},
                     log_path).start()
    ready, ended, errors = threading.Semaphore(0), [], []
    headers = tenant.headers("engineer")
    try:
        exited_in, code = _open_streams_and_stop(web, headers, ready, ended, errors)
    finally:
        web.stop()
    log = log_path.read_text(errors="replace")
    assert code == 0, log[-2000:]
    assert errors == [] and len(ended) == 100, (errors[:3], len(ended))
    assert "ended 100 live stream(s) for shutdown" in log, log[-2000:]
    assert "graceful timeout" not in log.lower(), "gunicorn waited out its graceful timeout"
    assert exited_in < 10, f"exited {exited_in:.1f}s after SIGTERM"


def _open_streams_and_stop(web, headers, ready, ended, errors):

    def listen():
        try:
            with httpx.Client(base_url=web.base_url, timeout=30) as http, \
                    http.stream("GET", STREAM, headers=headers) as answer:
                assert answer.status_code == 200
                for line in answer.iter_lines():
                    if line.replace(" ", "") == "event:ready":
                        ready.release()
            ended.append(time.monotonic())
        except Exception as error:  # a reset connection instead of an ended stream
            errors.append(repr(error))
            ready.release()
    threads = [threading.Thread(target=listen, daemon=True) for _ in range(100)]
    for thread in threads:
        thread.start()
    for _ in threads:
        assert ready.acquire(timeout=60), "a stream did not get `ready`"
    assert errors == []
    stopped_at = time.monotonic()
    web.process.send_signal(signal.SIGTERM)
    code = web.process.wait(30)
    exited_in = time.monotonic() - stopped_at
    for thread in threads:
        thread.join(10)
    return exited_in, code
