"""Escalation emails: each recipient's row claimed, sent and settled on its own."""
import logging

from celery import shared_task

from webapp.extensions import db
from webapp.services import channels

log = logging.getLogger(__name__)


@shared_task(name="notifications.send_email", acks_late=True)
def send_email(delivery_id: int) -> None:
    """Email one recipient about an escalation, once, however often this task runs."""
    channels.drive("email", delivery_id)


@shared_task(name="notifications.send_emails", acks_late=True)
def send_emails(delivery_ids: list[int]) -> None:
    """Email a group of an escalation's recipients, one after another on this thread's SMTP
    connection. Each row is still claimed, sent and settled on its own, and one that fails is
    retried on its own (as `notifications.send_email`), so a group run twice, or cut short by
    a killed worker, still sends each email once."""
    for delivery_id in delivery_ids:
        try:
            channels.drive("email", delivery_id)
        except Exception:  # e.g. the database went away: beat re-enqueues this row; go on
            log.exception("email delivery %s not driven; left for redelivery", delivery_id)
            db.session.remove()
