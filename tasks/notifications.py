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
    """Email a group of an escalation's recipients (see send_group)."""
    send_group(delivery_ids)


def send_group(delivery_ids: list[int]) -> None:
    """Email a group of recipients one after another on this thread's SMTP connection: the
    rows claimed together, the handoff and recipients read once, the outcomes recorded
    together. A claim is conditional, so a group run twice sends each email once; a row that
    fails is retried on its own (as `notifications.send_email`)."""
    try:
        channels.drive_group("email", delivery_ids)
    except Exception:  # e.g. the database went away: beat hands the rows back; nothing lost
        log.exception("email deliveries %s not driven; left for redelivery", delivery_ids)
        db.session.remove()
