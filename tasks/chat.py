"""The team chat message of an escalation, or of its reminder."""
from celery import shared_task

from webapp.services import channels


@shared_task(name="chat.post_message", acks_late=True)
def post_message(delivery_id: int) -> None:
    """Post one message to the account's Teams or Slack channel, once."""
    channels.drive("chat", delivery_id)
