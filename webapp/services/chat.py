"""The account's team chat channel (a Teams Workflows or Slack incoming webhook): its
settings, and the side effect of a chat delivery row (the escalation, or its reminder)."""
from __future__ import annotations

from flask import current_app
from sqlalchemy.orm import joinedload

from webapp.extensions import db
from webapp.integrations import chat
from webapp.models import Account, Delivery, Handoff
from webapp.secrets_at_rest import decrypt_json, encrypt_json
from webapp.services.deliveries import Permanent, Skip
from webapp.services.errors import Invalid
from webapp.services.notifications import REMINDER, handoff_link


def public_view(account: Account) -> dict:
    """What GET /account/chat shows: never the URL, which is the credential itself."""
    return {"provider": account.chat_provider, "configured": account.chat_provider != "none",
            "webhook_url_set": account.chat_secret is not None}


def save(account: Account, provider: str, webhook_url: str | None) -> None:
    """Set or clear the account's chat webhook; the caller commits. Invalid if the URL is not
    one this product may call (https, a public host, unless private addresses are allowed)."""
    if provider == "none":
        account.chat_provider, account.chat_secret = "none", None
        return
    problem = chat.check_webhook_url(
        provider, webhook_url, allow_private=current_app.config["ALLOW_PRIVATE_ADDRESSES"])
    if problem:
        raise Invalid(f"webhook_url: {problem}", {"webhook_url": [problem]})
    account.chat_provider = provider
    account.chat_secret = encrypt_json({"webhook_url": webhook_url.strip()})


def is_set(account: Account) -> bool:
    return is_configured(account.chat_provider, account.chat_secret is not None)


def is_configured(provider: str, secret_set: bool) -> bool:
    return provider != "none" and secret_set


def facts(handoff: Handoff, reminder: bool = False) -> chat.ChatFacts:
    snapshot = handoff.snapshot
    return chat.ChatFacts(title=snapshot.get("title") or "", urgency=handoff.urgency,
                          client=snapshot.get("client_name") or "no client named",
                          escalator=handoff.creator.name, note=handoff.note,
                          link=handoff_link(handoff), reminder=reminder)


def post_message(row: Delivery) -> str | None:
    """Side effect of a chat row: one message to the account's channel, unless the
    escalation no longer needs anyone (claimed or cancelled before it went out)."""
    handoff, account = db.session.execute(
        db.select(Handoff, Account).options(joinedload(Handoff.creator), joinedload(
            Handoff.claimer)).join(Account, Account.id == Handoff.account_id)
        .where(Handoff.id == row.handoff_id)).one()
    if handoff.status == "cancelled":
        raise Skip("escalation cancelled")
    if handoff.status == "claimed":
        raise Skip(f"already claimed by {handoff.claimer.name}")
    if not is_set(account):
        raise Skip("the account has no chat channel any more")
    try:
        url = decrypt_json(account.chat_secret)["webhook_url"]
    except (ValueError, KeyError):
        raise Permanent("the stored chat webhook cannot be decrypted with the current "
                        "ENCRYPTION_KEY; save the chat channel again") from None
    payload = chat.build_message(account.chat_provider,
                                 facts(handoff, reminder=row.purpose == REMINDER))
    config = current_app.config
    return chat.post(account.chat_provider, url, payload,
                     allow_private=config["ALLOW_PRIVATE_ADDRESSES"],
                     deadline=config["PSA_TIMEOUT"])
