"""Handoffs (park or escalate) and the delivery rows of their side effects."""
from __future__ import annotations

import secrets
from datetime import datetime

from sqlalchemy import (
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from webapp.extensions import db
from webapp.models.accounts import User
from webapp.models.base import created_at_column, sql_in, utcnow
from webapp.models.sessions import AiSession

INTENTS = ("park", "escalate")
HANDOFF_STATUSES = ("open", "claimed", "resumed", "cancelled")
URGENCIES = ("normal", "high")
CHANNELS = ("email", "psa", "assessment", "chat")
# why a row was written: the escalation itself, or the reminder that nobody has claimed it
PURPOSES = ("escalation", "reminder")
DELIVERY_STATUSES = ("pending", "sending", "sent", "failed", "dead", "skipped")


def new_marker_nonce() -> str:
    return secrets.token_hex(8)


class Handoff(db.Model):
    __tablename__ = "handoffs"
    __table_args__ = (
        CheckConstraint(sql_in("intent", INTENTS), name="handoffs_intent_valid"),
        CheckConstraint(sql_in("status", HANDOFF_STATUSES), name="handoffs_status_valid"),
        CheckConstraint(sql_in("urgency", URGENCIES), name="handoffs_urgency_valid"),
        Index("handoffs_one_open_per_session", "session_id", unique=True,
              postgresql_where=text("status = 'open'")),
        Index("handoffs_queue", "account_id", "intent", "status", "created_at", "id"),
        # the reminder sweep reads only escalations still waiting for theirs
        Index("handoffs_awaiting_reminder", "created_at",
              postgresql_where=text("intent = 'escalate' AND status = 'open' "
                                    "AND reminded_at IS NULL")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    session_id: Mapped[int] = mapped_column(ForeignKey("ai_sessions.id", ondelete="CASCADE"),
                                            index=True)
    intent: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="open")
    note: Mapped[str] = mapped_column(Text)
    urgency: Mapped[str] = mapped_column(String(16), default="normal")
    snapshot: Mapped[dict] = mapped_column(JSONB)
    assessment: Mapped[dict | None] = mapped_column(JSONB)
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = created_at_column()
    claimed_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    reminded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # the random part of the PSA note's marker: text a user types cannot pass for it
    marker_nonce: Mapped[str | None] = mapped_column(String(32), default=new_marker_nonce)

    session: Mapped[AiSession] = relationship()
    creator: Mapped[User] = relationship(foreign_keys=[created_by])
    claimer: Mapped[User | None] = relationship(foreign_keys=[claimed_by])
    deliveries: Mapped[list[Delivery]] = relationship(back_populates="handoff",
                                                      order_by="Delivery.id")


class Delivery(db.Model):
    __tablename__ = "deliveries"
    __table_args__ = (
        CheckConstraint(sql_in("channel", CHANNELS), name="deliveries_channel_valid"),
        CheckConstraint(sql_in("status", DELIVERY_STATUSES), name="deliveries_status_valid"),
        # `failed` always means a retry is scheduled; never again is `dead`
        CheckConstraint("status <> 'failed' OR next_attempt_at IS NOT NULL",
                        name="deliveries_failed_has_next_attempt"),
        CheckConstraint(sql_in("purpose", PURPOSES), name="deliveries_purpose_valid"),
        UniqueConstraint("handoff_id", "channel", "recipient", "purpose",
                         name="deliveries_one_per_recipient"),
        Index("deliveries_due", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    handoff_id: Mapped[int] = mapped_column(ForeignKey("handoffs.id", ondelete="CASCADE"))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"),
                                            index=True)
    channel: Mapped[str] = mapped_column(String(16))
    recipient: Mapped[str] = mapped_column(String(320))
    recipient_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    purpose: Mapped[str] = mapped_column(String(16), default="escalation",
                                         server_default="escalation")
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    external_id: Mapped[str | None] = mapped_column(String(200))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False,
                                                 server_default=func.now(), default=utcnow,
                                                 onupdate=utcnow)

    handoff: Mapped[Handoff] = relationship(back_populates="deliveries")
