"""handoff_updated, as a worker announces it (handoff_views.announce, read in one Core statement),
carries the same summary as the ORM's reading of the handoff that the API answers with."""
import json

import pytest

from tests.factories import undispatched_handoff
from tests.helpers import set_delivery
from webapp.extensions import db
from webapp.live import stream_key
from webapp.models import Delivery, Handoff
from webapp.models.base import utcnow
from webapp.redis_client import get_redis
from webapp.services import handoff_views


def announced(app, account_id: int, handoff_id: int) -> dict:
    """The summary in the newest handoff_updated event of the handoff, once announced."""
    redis = get_redis(app)
    before = redis.xrevrange(stream_key(account_id), count=1)
    with app.app_context():
        handoff_views.announce(handoff_id)
    entries = redis.xrange(stream_key(account_id), min=f"({before[0][0].decode()}"
                           if before else "-")
    events = [json.loads(fields[b"data"])["handoff"] for _, fields in entries
              if fields[b"event"] == b"handoff_updated"]
    assert [event["id"] for event in events] == [handoff_id]
    return events[0]


def as_the_orm_reads_it(app, handoff_id: int) -> dict:
    with app.app_context():
        summary = handoff_views.summary(db.session.get(Handoff, handoff_id))
        db.session.remove()
    return json.loads(json.dumps(summary))


@pytest.mark.parametrize("state", ["just created", "assessed, noted and claimed",
                                   "assessment failed, note retrying"])
def test_the_announced_summary_is_the_apis(app, app_env, tenant, state):
    handoff_id = undispatched_handoff(app_env, tenant, note="DNS fails on DC01")
    with app.app_context():
        rows = {row.channel: row.id for row in db.session.scalars(db.select(Delivery).where(
            Delivery.handoff_id == handoff_id, Delivery.channel.in_(("assessment", "psa"))))}
        if state == "assessed, noted and claimed":
            handoff = db.session.get(Handoff, handoff_id)
            handoff.assessment = {"summary": "DNS", "likely_causes": ["a"], "next_steps": ["b"],
                                  "confidence": 0.5, "provider": "heuristic", "model": None}
            handoff.status, handoff.claimed_at = "claimed", utcnow()
            handoff.claimed_by = tenant.users["admin"]["id"]
        db.session.commit()
    if state == "assessed, noted and claimed":
        set_delivery(app, rows["assessment"], status="sent", attempts=1)
        set_delivery(app, rows["psa"], status="sent", attempts=2, external_id="note-77")
    elif state == "assessment failed, note retrying":
        set_delivery(app, rows["assessment"], status="dead", attempts=3, last_error="no model")
        set_delivery(app, rows["psa"], status="failed", attempts=1, last_error="503 busy",
                     next_attempt_at=utcnow())
    event = announced(app, tenant.account_id, handoff_id)
    assert event == as_the_orm_reads_it(app, handoff_id)
    assert event["snapshot"]["message_count"] > 0 and "messages" not in event["snapshot"]
    if state == "assessed, noted and claimed":
        assert event["claimed_by_user"]["id"] == tenant.users["admin"]["id"]
        assert (event["psa"]["note_id"], event["assessment"]["status"]) == ("note-77", "ready")
