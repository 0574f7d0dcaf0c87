"""An operator's view across accounts: the delivery rows that need a look (the deliveries
CLI)."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func

from webapp.extensions import db
from webapp.models import CHANNELS, Delivery
from webapp.models.base import utcnow
from webapp.services.deliveries import DeliveryStatus
from webapp.services.errors import Conflict, Invalid, NotFound

S = DeliveryStatus

PROBLEMS = (S.FAILED, S.DEAD)


def problems(status: DeliveryStatus | None = None, account_id: int | None = None,
             channel: str | None = None, older_than: timedelta | None = None,
             limit: int | None = None) -> tuple[list[Delivery], dict]:
    """Failed and dead rows of every account (or only those of `status`), filtered by account,
    channel and age, oldest first; and their counts, of every row that matches whatever the
    `limit`: {"total": N, "by_status": {status: n}, "by_channel": {channel: n}}.
    A row's age is the time since it last changed (updated_at): for a dead row, since it died;
    for a failed one, since its last attempt."""
    statuses = PROBLEMS if status is None else (S(status),)
    if any(wanted not in PROBLEMS for wanted in statuses):
        raise Invalid(f"only failed or dead deliveries are problems, not {status}")
    if channel is not None and channel not in CHANNELS:
        raise Invalid(f"no such channel: {channel}")
    conditions = [Delivery.status.in_([str(wanted) for wanted in statuses])]
    if account_id is not None:
        conditions.append(Delivery.account_id == account_id)
    if channel is not None:
        conditions.append(Delivery.channel == channel)
    if older_than is not None:
        conditions.append(Delivery.updated_at <= utcnow() - older_than)
    query = db.select(Delivery).where(*conditions).order_by(Delivery.updated_at, Delivery.id)
    rows = list(db.session.scalars(query if limit is None else query.limit(limit)))
    by_status = {str(wanted): 0 for wanted in statuses}
    by_channel = {name: 0 for name in CHANNELS}
    for row_status, row_channel, count in db.session.execute(
            db.select(Delivery.status, Delivery.channel, func.count()).where(*conditions)
            .group_by(Delivery.status, Delivery.channel)):
        by_status[row_status] += count
        by_channel[row_channel] += count
    return rows, {"total": sum(by_status.values()), "by_status": by_status,
                  "by_channel": by_channel}


def retryable(delivery_id: int) -> Delivery:
    """The row an operator's retry names, in any account: NotFound, or Conflict when it is not
    failed or dead (the refusals of reset_for_retry, checked before anything is written)."""
    row = db.session.get(Delivery, delivery_id)
    if row is None:
        raise NotFound(f"delivery {delivery_id}")
    if row.status not in PROBLEMS:
        raise Conflict("not_retryable", f"only failed or dead deliveries can be retried; "
                                        f"delivery {delivery_id} is {row.status}")
    return row
