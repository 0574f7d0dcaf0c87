"""Drill: two web processes, two workers and two beats at once, on one queue. Escalations
come in through both webs; seniors on both claim the same escalations at the same moment;
the ones left unclaimed fall due a reminder. Each claim has exactly one winner; every email,
note and chat message goes out once; each due escalation is reminded once; listeners on
both webs see every published event once, in order."""
import json
import re
import threading
from collections import Counter

import httpx
import pytest

from tests.conftest import wait_for
from tests.drills.conftest import (
    Escalator,
    drill_counts,
    expected_counts,
    format_counts,
    published_ids,
    settle,
)
from tests.servers.chat import ChatServer
from webapp.extensions import db

pytestmark = pytest.mark.drills

PER_WEB = 3
HANDOFF = re.compile(r"handoff-(\d+)")
CLAIMERS = ("admin", "engineer2", "engineer3", "engineer4")


def claim_race(webs, tenant, handoff_id: int) -> list[int]:
    """Every claimer POSTs the claim at the same moment, alternating between the webs; the
    answers' statuses."""
    barrier, answers = threading.Barrier(len(CLAIMERS)), []

    def claim(index: int, role: str):
        with httpx.Client(base_url=webs[index % len(webs)].base_url, timeout=15) as http:
            barrier.wait(10)
            answer = http.post(f"/api/v1/handoffs/{handoff_id}/claim",
                               headers=tenant.headers(role))
            code = answer.json().get("error", {}).get("code") if answer.status_code != 200 \
                else None
            answers.append((answer.status_code, code))
    threads = [threading.Thread(target=claim, args=(i, role)) for i, role in enumerate(CLAIMERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return answers


def backdate(app, handoff_ids: list[int], minutes: float) -> None:
    """Make the escalations `minutes` older, as if the clock had moved on."""
    with app.app_context():
        db.session.execute(db.text(
            "UPDATE handoffs SET created_at = created_at - make_interval(secs => :s) "
            "WHERE id = ANY(:ids)"), {"s": minutes * 60, "ids": handoff_ids})
        db.session.commit()
        db.session.remove()


@pytest.mark.timeout(240)
def test_two_webs_two_workers_two_beats_claim_once_send_once_remind_once(
        rig, drill_smtp, psa_server, listeners, make_tenant):
    drill = rig("many", MAIL_PORT=str(drill_smtp.port))
    webs = [drill.web(), drill.web()]
    drill.worker()
    drill.worker()
    drill.beat()
    drill.beat()
    tenant = make_tenant("Many Processes MSP", extra_engineers=3)
    recipients = [tenant.users[label]["email"] for label in
                  ("owner", "admin", "engineer2", "engineer3", "engineer4")]
    reminded_people = [tenant.users["owner"]["email"], tenant.users["admin"]["email"]]
    with ChatServer() as chat:
        with httpx.Client(base_url=webs[1].base_url, timeout=10) as http:
            admin = tenant.headers("admin")
            for path, body in (
                    ("/api/v1/account/psa", {"provider": "connectwise",
                                             **psa_server.settings("connectwise")}),
                    ("/api/v1/account/chat", {"provider": "teams",
                                              "webhook_url": chat.teams_url}),
                    ("/api/v1/account/escalation-policy", {"remind_after_minutes": 1})):
                assert http.put(path, headers=admin, json=body).status_code == 200, path
        queues = [listeners(f"web{n}", web.base_url, tenant.headers("owner"))
                  for n, web in enumerate(webs)]
        escalators = [Escalator(web.base_url, tenant, psa_server, first_ticket=4001 + 100 * n)
                      for n, web in enumerate(webs)]
        for _ in range(PER_WEB):
            for escalator, web in zip(escalators, webs, strict=True):
                with httpx.Client(base_url=web.base_url, timeout=10) as http:
                    escalator.one(http)
        created = [handoff_id for escalator in escalators for handoff_id in escalator.created]
        assert len(created) == 2 * PER_WEB, [e.statuses() for e in escalators]

        def counts():
            return drill_counts(drill.app, tenant.account_id, smtp=drill_smtp,
                                recipients=recipients, psa=psa_server, chat=chat,
                                listeners=queues, reminder_recipients=reminded_people)

        # everything has gone out before the claims (a claim skips what has not)
        wait_for(lambda: (lambda found: found["unfinished"] == 0
                          and found["emails_missing"] == 0)(counts()), 60, 0.25,
                 lambda: f"the escalations sent: {format_counts(counts())}")

        claimed = created[::2]   # one from each web, and one more
        races = {handoff_id: claim_race(webs, tenant, handoff_id) for handoff_id in claimed}
        backdate(drill.app, created, 2)

        def expected(_found):
            wanted = expected_counts(
                len(created), recipients, notes=True, chat=True, listeners=queues,
                published=len(published_ids(drill.app.config["REDIS_URL"],
                                            tenant.account_id)),
                reminded=len(created) - len(claimed), reminder_recipients=reminded_people)
            wanted["chat_reminders"] = {1: len(created) - len(claimed)}
            return wanted

        def with_chat_reminders():
            found = counts()
            reminded = Counter()
            for message in chat.messages:
                text = json.dumps(message.json)
                if "still unclaimed" in text.lower():
                    reminded.update({int(found_id) for found_id in HANDOFF.findall(text)})
            found["chat_reminders"] = dict(sorted(Counter(
                reminded[handoff_id] for handoff_id in created
                if handoff_id not in claimed or reminded[handoff_id]).items()))
            return found
        found, wanted = settle(with_chat_reminders, expected, 90)
    found["claims"] = {"winners": sorted(sum(1 for status, _ in answers if status == 200)
                                         for answers in races.values()),
                       "refused": sorted({code for answers in races.values()
                                          for status, code in answers if status != 200})}
    wanted["claims"] = {"winners": [1] * len(claimed), "refused": ["already_claimed"]}
    line = format_counts(found)
    assert found == wanted, f"drill counts: {line}"
