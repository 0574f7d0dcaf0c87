"""The one message the API sends per handoff, fanned out here into per-row tasks (in groups
of rows per task where the channel sends in groups)."""
from celery import shared_task

from tasks.notifications import send_group
from webapp import logs
from webapp.extensions import db
from webapp.models import Delivery
from webapp.services import channels
from webapp.services.deliveries import DeliveryStatus


@shared_task(name="handoffs.dispatch", acks_late=True)
def dispatch_handoff(handoff_id: int) -> int:
    """Enqueue the tasks of the handoff's pending delivery rows, channel by channel in the
    registry's order, and send its first group of emails here: the team hears at once, and
    the commonest escalation (a handful of seniors) costs one task fewer. Returns how many
    rows."""
    logs.bind(handoff_id=handoff_id)
    rows = db.session.execute(db.select(Delivery.id, Delivery.channel).where(
        Delivery.handoff_id == handoff_id, Delivery.status == DeliveryStatus.PENDING)
        .order_by(Delivery.id)).all()
    emails = channels.enqueue_rows([(row.id, row.channel) for row in rows], keep="email")
    if emails:
        send_group(emails)
    return len(rows)
