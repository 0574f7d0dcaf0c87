"""The account's escalation policy, and the reminder an escalation gets when nobody has
claimed it `remind_after_minutes` after it was made: one email to each active user of
`remind_roles` (never the escalator) and a chat message when a channel is set."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import text

from webapp.extensions import db
from webapp.models import Account
from webapp.models.accounts import DEFAULT_REMIND_ROLES
from webapp.services.deliveries import DeliveryStatus

# One statement, so it holds whoever else runs it: the due escalations are locked (a second
# beat, or this job overlapping itself, skips them), marked reminded (only if still unmarked),
# and given their reminder rows, which the unique key keeps to one per recipient and channel.
REMIND_DUE = text("""
WITH due AS (
    SELECT h.id FROM handoffs h JOIN accounts a ON a.id = h.account_id
    WHERE h.intent = 'escalate' AND h.status = 'open' AND h.reminded_at IS NULL
      AND a.remind_after_minutes > 0
      AND h.created_at <= :now - make_interval(mins => a.remind_after_minutes)
    ORDER BY h.created_at, h.id
    LIMIT :limit
    FOR UPDATE OF h SKIP LOCKED
), marked AS (
    UPDATE handoffs SET reminded_at = :now FROM due
    WHERE handoffs.id = due.id AND handoffs.reminded_at IS NULL AND handoffs.status = 'open'
    RETURNING handoffs.id, handoffs.account_id, handoffs.created_by
), written AS (
    INSERT INTO deliveries (handoff_id, account_id, channel, recipient, recipient_user_id,
                            purpose, status, attempts, next_attempt_at, created_at, updated_at)
    SELECT m.id, m.account_id, 'email', lower(u.email), u.id, 'reminder', :waiting, 0,
           :now, :now, :now
    FROM marked m JOIN accounts a ON a.id = m.account_id
    JOIN users u ON u.account_id = m.account_id AND u.deleted_at IS NULL
                AND u.role = ANY(a.remind_roles) AND u.id <> m.created_by
    UNION ALL
    SELECT m.id, m.account_id, 'chat', 'chat', NULL, 'reminder', :waiting, 0, :now, :now, :now
    FROM marked m JOIN accounts a ON a.id = m.account_id
    WHERE a.chat_provider <> 'none' AND a.chat_secret IS NOT NULL
    ON CONFLICT ON CONSTRAINT deliveries_one_per_recipient DO NOTHING
    RETURNING id, handoff_id, channel
)
SELECT m.id AS handoff_id, w.id AS delivery_id, w.channel
FROM marked m LEFT JOIN written w ON w.handoff_id = m.id
ORDER BY m.id, w.id
""")


def policy_view(account: Account) -> dict:
    return {"remind_after_minutes": account.remind_after_minutes,
            "remind_roles": list(account.remind_roles or ())}


def save_policy(account: Account, minutes: int, roles: list[str] | None) -> None:
    """The caller commits; roles default to owners and admins."""
    account.remind_after_minutes = minutes
    if roles is not None:
        account.remind_roles = sorted(set(roles), key=("owner", "admin", "engineer").index)
    elif not account.remind_roles:
        account.remind_roles = list(DEFAULT_REMIND_ROLES)


def remind_due(now: datetime, limit: int = 500) -> dict[int, list[tuple[int, str]]]:
    """Write the reminders of every escalation that fell due (committed); returns each
    reminded handoff's new rows as (delivery id, channel). A handoff whose account has no one
    to remind is still marked, so it is not looked at again."""
    found: dict[int, list[tuple[int, str]]] = {}
    for row in db.session.execute(REMIND_DUE, {"now": now, "limit": limit,
                                               "waiting": str(DeliveryStatus.PENDING)}):
        rows = found.setdefault(row.handoff_id, [])
        if row.delivery_id is not None:
            rows.append((row.delivery_id, row.channel))
    db.session.commit()
    return found


def send_due(now: datetime) -> int:
    """The beat job's work: write the due reminders, then tell each team's queue (the
    handoff now has reminded_at) and enqueue the rows. Returns how many escalations."""
    from webapp.services import channels, handoff_views
    reminded = remind_due(now)
    for handoff_id, rows in reminded.items():
        handoff_views.announce(handoff_id)
        channels.enqueue_rows(rows)
    return len(reminded)
