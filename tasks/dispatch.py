"""The one message the API sends per handoff, fanned out here into per-row tasks (in groups
of rows per task where the channel sends in groups)."""
import logging

from celery import shared_task
from sqlalchemy import bindparam

from tasks.notifications import send_group
from webapp import logs
from webapp.extensions import db
from webapp.models import Delivery
from webapp.services import channels
from webapp.services.deliveries import DeliveryStatus

log = logging.getLogger(__name__)

_PENDING_ROWS = db.select(Delivery.id, Delivery.channel).where(
    Delivery.handoff_id == bindparam("handoff_id"),
    Delivery.status == DeliveryStatus.PENDING).order_by(Delivery.id)


@shared_task(name="handoffs.dispatch", acks_late=True)
def dispatch_handoff(handoff_id: int) -> int:
    """Run the handoff's local rows here (the heuristic assessment), then enqueue the tasks
    of its other pending rows, channel by channel in the registry's order, and send its first
    group of emails here: the team hears at once, and the commonest escalation (a handful of
    seniors) costs two tasks fewer. Returns how many rows."""
    logs.bind(handoff_id=handoff_id)
    rows = db.session.execute(_PENDING_ROWS, {"handoff_id": handoff_id}).all()
    later = []
    for row in rows:
        if not channels.runs_locally(row.channel):
            later.append((row.id, row.channel))
            continue
        try:
            channels.drive(row.channel, row.id)
        except Exception:  # e.g. the database went away: beat hands the row back
            log.exception("%s delivery %s not driven; left for redelivery", row.channel, row.id)
            db.session.remove()
    emails = channels.enqueue_rows(later, keep="email")
    if emails:
        send_group(emails)
    return len(rows)
