"""Escalation emails, one task per recipient."""
from celery import shared_task

from webapp.services import deliveries, notifications

RETRY = deliveries.RetryPolicy(base=5.0, cap=600.0, max_attempts=8)


@shared_task(name="notifications.send_email", acks_late=True)
def send_email(delivery_id: int) -> None:
    """Email one recipient about an escalation, once, however often this task runs."""
    deliveries.drive(send_email.name, delivery_id, notifications.send_escalation_email, RETRY)
