"""The escalation email: one per recipient, written so a senior can act on it."""
from __future__ import annotations

import copy
import re
import time
from collections.abc import Callable
from types import SimpleNamespace

from flask import current_app
from flask_mail import BadHeaderError, Message
from sqlalchemy import Integer, any_, bindparam
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import aliased, joinedload

from webapp.extensions import db
from webapp.integrations import mail
from webapp.models import SENIOR_ROLES, Delivery, Handoff, User
from webapp.models.base import utcnow
from webapp.models.handoffs import PURPOSES
from webapp.services.deliveries import Permanent, Retryable, Skip
from webapp.services.handoff_views import CLAIMER, CREATOR
from webapp.services.statements import Prepared


def handoff_link(handoff: Handoff) -> str:
    return f"{current_app.config['PUBLIC_BASE_URL'].rstrip('/')}/queue#handoff-{handoff.id}"


REMINDER = PURPOSES[1]
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
MAX_SUBJECT = 200


def header_text(value: object) -> str:
    """Text a user typed, fit for a mail header: control characters (line breaks first of
    all, which would start a header of their own) become single spaces."""
    return " ".join(_CONTROL.sub(" ", str(value or "")).split())


def minutes_waiting(handoff: Handoff) -> int:
    return max(1, round((utcnow() - handoff.created_at).total_seconds() / 60))


def compose(handoff: Handoff, row: Delivery) -> Message:
    snapshot = handoff.snapshot
    client = snapshot.get("client_name") or "no client named"
    urgent = handoff.urgency == "high"
    reminder = row.purpose == REMINDER
    if reminder:
        subject = (f"{'[URGENT] ' if urgent else ''}Still unclaimed after "
                   f"{minutes_waiting(handoff)} min: {snapshot.get('title')} ({client}) "
                   f"from {handoff.creator.name}")
    else:
        subject = (f"{'[URGENT] ' if urgent else ''}Escalation: {snapshot.get('title')} "
                   f"({client}) from {handoff.creator.name}")
    subject = header_text(subject)[:MAX_SUBJECT]
    problem = (snapshot.get("problem") or "").strip()
    if len(problem) > 1500:
        problem = problem[:1500].rstrip() + " ..."
    transcript = snapshot.get("messages") or []
    lines = [
        f"{handoff.creator.name} escalated a session and needs a senior to take it over.",
        *([f"Nobody has claimed it in {minutes_waiting(handoff)} minutes."] if reminder else []),
        "",
        f"Session:   {snapshot.get('title')}",
        f"Client:    {client}",
        f"Urgency:   {'HIGH' if urgent else 'normal'}",
        f"Ticket:    {snapshot.get('psa_ticket_id') or 'none'}",
        f"Escalated: {handoff.created_at:%Y-%m-%d %H:%M} UTC",
        "",
        "Escalation note:",
        handoff.note,
        "",
        "Problem:",
        problem or "(not described)",
        "",
        f"Transcript: {len(transcript)} message(s) in the session snapshot.",
        "",
        f"Claim it: {handoff_link(handoff)}",
        "",
        "The first senior to claim it takes the session; the others see it as claimed.",
    ]
    message = Message(subject=subject, recipients=[row.recipient], body="\n".join(lines),
                      extra_headers={"X-Escalation-Handoff": str(handoff.id),
                                     "X-Escalation-Session": str(handoff.session_id)})
    message.msgId = f"<handoff-{handoff.id}.delivery-{row.id}@escalations>"
    if reminder:   # for mail rules that file or highlight reminders
        message.extra_headers["X-Escalation-Reminder"] = "1"
    return message


# Rendering a message (MIME, header folding) costs the worker more than sending it: the
# recipients of one email in a group get one rendering, made for a stand-in and re-addressed.
_STAND_IN_TO, _STAND_IN_ID = "stand-in@recipient.invalid", "<stand-in@message-id.invalid>"
_TO_LINE, _ID_LINE = b"\r\nTo: %s\r\n", b"\r\nMessage-ID: %s\r\n"
# an address that reads the same in a header as it is, and is too short to fold
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9.-]{1,120}")
_PLAIN_ID = re.compile(r"<[A-Za-z0-9.-]{1,80}@[A-Za-z0-9.-]{1,40}>")


def readdressed(message: Message, renderings: dict, key) -> Message:
    """The message, its bytes taken from the rendering of the same email (`key`) for another
    recipient, changed only in To and Message-ID. A message whose address or id a header
    would quote, encode or fold is rendered on its own."""
    recipient = message.recipients[0] if len(message.recipients) == 1 else ""
    if not _PLAIN_ADDRESS.fullmatch(recipient) or not _PLAIN_ID.fullmatch(message.msgId):
        return message
    if key not in renderings:
        stand_in = copy.copy(message)
        stand_in.recipients, stand_in.msgId = [_STAND_IN_TO], _STAND_IN_ID
        stand_in.date = time.time()
        data = stand_in.as_bytes()
        to, msg_id = _TO_LINE % _STAND_IN_TO.encode(), _ID_LINE % _STAND_IN_ID.encode()
        plain = data.count(to) == 1 and data.count(msg_id) == 1 and \
            data.count(_STAND_IN_TO.encode()) == 1
        renderings[key] = (data, stand_in.date, to, msg_id) if plain else None
    rendering = renderings[key]
    if rendering is None:
        return message
    data, message.date, to, msg_id = rendering
    data = data.replace(to, _TO_LINE % recipient.encode()).replace(
        msg_id, _ID_LINE % message.msgId.encode())
    message.as_bytes = lambda: data   # (what flask-mail's Connection.send sends)
    return message


def send_escalation_email(row: Delivery) -> str:
    """Side effect of an email row: send to its recipient unless no longer wanted."""
    # the handoff, the escalator the email names and the recipient: one statement, not four
    recipient = aliased(User)
    handoff, user = db.session.execute(
        db.select(Handoff, recipient).options(joinedload(Handoff.creator))
        .outerjoin(recipient, recipient.id == row.recipient_user_id)
        .where(Handoff.id == row.handoff_id)).one()
    return _send(handoff, user, row)


def escalation_emails(rows: list[Delivery]) -> Callable[[Delivery], str]:
    """The side effect of each row of a group: their handoffs (with the names of the
    escalators the emails name, and of the claimers) and recipients read in two statements
    for the whole group, not one per row, as plain rows (ORM objects cost more to load than
    the statements)."""
    handoffs = {found.id: _as_handoff(found) for found in _GROUP_HANDOFFS.run(
        {"ids": sorted({row.handoff_id for row in rows})})}
    wanted = {row.recipient_user_id for row in rows} - {None}
    users = {user.id: user for user in _GROUP_RECIPIENTS.run(
        {"ids": sorted(wanted)})} if wanted else {}
    renderings: dict = {}
    return lambda row: _send(handoffs[row.handoff_id], users.get(row.recipient_user_id), row,
                             renderings)


def _as_handoff(found) -> SimpleNamespace:
    """A _GROUP_HANDOFFS row as what `_send` and `compose` read of a handoff."""
    handoff = SimpleNamespace(**found._asdict())
    handoff.creator = SimpleNamespace(name=found.creator_name)
    handoff.claimer = SimpleNamespace(name=found.claimer_name) \
        if found.claimed_by is not None else None
    return handoff


# built once: building a statement anew for every group cost more than running it
_H = Handoff.__table__
_GROUP_HANDOFFS = Prepared(db.select(
    _H.c.id, _H.c.session_id, _H.c.status, _H.c.urgency, _H.c.note, _H.c.snapshot,
    _H.c.created_at, _H.c.claimed_by, CREATOR.c.name.label("creator_name"),
    CLAIMER.c.name.label("claimer_name"),
).select_from(_H.join(CREATOR, CREATOR.c.id == _H.c.created_by).outerjoin(
    CLAIMER, CLAIMER.c.id == _H.c.claimed_by)).where(
    _H.c.id == any_(bindparam("ids", type_=ARRAY(Integer)))))
_GROUP_RECIPIENTS = Prepared(db.select(User.id, User.deleted_at, User.role).where(
    User.id == any_(bindparam("ids", type_=ARRAY(Integer)))))


def _send(handoff: Handoff, user: User | None, row: Delivery,
          renderings: dict | None = None) -> str:
    if handoff.status == "cancelled":
        raise Skip("escalation cancelled")
    if handoff.status == "claimed":
        raise Skip(f"already claimed by {handoff.claimer.name}")
    if user is None or user.deleted_at is not None or user.role not in SENIOR_ROLES:
        raise Skip("recipient is no longer an active senior")
    message = compose(handoff, row)
    if renderings is not None:
        message = readdressed(message, renderings, (handoff.id, row.purpose))
    try:
        mail.send(message)
    except BadHeaderError as error:   # no retry can mend the message
        raise Permanent("the message has a line break in a header; not sent") from error
    except mail.MailRetryable as error:
        raise Retryable(str(error)) from error
    except mail.MailPermanent as error:
        raise Permanent(str(error)) from error
    return message.msgId
