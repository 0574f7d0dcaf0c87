"""Who an escalation reaches: the account's active seniors, never the escalator."""
from __future__ import annotations

from sqlalchemy import any_, bindparam
from sqlalchemy.dialects.postgresql import array

from webapp.extensions import db
from webapp.models import SENIOR_ROLES, User

# Active engineers, admins and owners of the account, other than the escalator: their id and
# email, all an escalation needs of them. Creating a handoff writes an email row for each.
RECIPIENTS = db.select(User.id, User.email).where(
    User.account_id == bindparam("account"), User.deleted_at.is_(None),
    User.role == any_(array(SENIOR_ROLES)), User.id != bindparam("escalator_id"))
