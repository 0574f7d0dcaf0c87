"""Who an escalation reaches: the account's active seniors, never the escalator."""
from __future__ import annotations

from sqlalchemy import bindparam

from webapp.extensions import db
from webapp.models import SENIOR_ROLES, User


def escalation_recipients(account_id: int, escalator_id: int) -> list:
    """Active engineers, admins and owners of the account, other than the escalator: rows of
    (id, email), all an escalation needs of them."""
    return list(db.session.execute(_RECIPIENTS, {"account_id": account_id,
                                                 "escalator_id": escalator_id}))


# built once: every escalation asks it
_RECIPIENTS = db.select(User.id, User.email).where(
    User.account_id == bindparam("account_id"), User.deleted_at.is_(None),
    User.role.in_(SENIOR_ROLES), User.id != bindparam("escalator_id")).order_by(User.id)
