"""AI-assisted troubleshooting sessions and their transcripts."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, DateTime, ForeignKey, String, Text, func
from sqlalchemy.orm import Mapped, mapped_column, relationship

from webapp.extensions import db
from webapp.models.base import created_at_column, sql_in, utcnow

SESSION_STATUSES = ("active", "parked", "escalated", "closed")
MESSAGE_ROLES = ("engineer", "assistant")


class AiSession(db.Model):
    __tablename__ = "ai_sessions"
    __table_args__ = (CheckConstraint(sql_in("status", SESSION_STATUSES),
                                      name="ai_sessions_status_valid"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"),
                                            index=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    title: Mapped[str] = mapped_column(String(200))
    problem: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="active")
    psa_ticket_id: Mapped[str | None] = mapped_column(String(64))
    client_name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False,
                                                 server_default=func.now(), default=utcnow,
                                                 onupdate=utcnow)

    messages: Mapped[list[SessionMessage]] = relationship(
        back_populates="session", order_by="SessionMessage.id")


class SessionMessage(db.Model):
    __tablename__ = "session_messages"
    __table_args__ = (CheckConstraint(sql_in("role", MESSAGE_ROLES),
                                      name="session_messages_role_valid"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("ai_sessions.id", ondelete="CASCADE"),
                                            index=True)
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = created_at_column()

    session: Mapped[AiSession] = relationship(back_populates="messages")
