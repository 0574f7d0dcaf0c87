"""Tenants (accounts), their users and the users' API tokens."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from webapp.extensions import db
from webapp.integrations.psa import PROVIDERS
from webapp.models.base import created_at_column, sql_in

ROLES = ("owner", "admin", "engineer", "viewer")
SENIOR_ROLES = ("owner", "admin", "engineer")
ADMIN_ROLES = ("owner", "admin")
PSA_PROVIDERS = ("none", *PROVIDERS)  # the check constraint's list (migration 0001)
CHAT_PROVIDERS = ("none", "teams", "slack")
DEFAULT_REMIND_ROLES = ("owner", "admin")


class Account(db.Model):
    __tablename__ = "accounts"
    __table_args__ = (
        CheckConstraint(sql_in("psa_provider", PSA_PROVIDERS), name="accounts_psa_provider_valid"),
        CheckConstraint(sql_in("chat_provider", CHAT_PROVIDERS),
                        name="accounts_chat_provider_valid"),
        CheckConstraint("remind_after_minutes BETWEEN 0 AND 1440",
                        name="accounts_remind_after_minutes_valid"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = created_at_column()
    psa_provider: Mapped[str] = mapped_column(String(16), default="none", server_default="none")
    psa_settings: Mapped[dict] = mapped_column(JSONB, default=dict,
                                               server_default=text("'{}'::jsonb"))
    # Fernet token over the provider's secret fields; never returned, never logged
    psa_secrets: Mapped[str | None] = mapped_column(Text)
    psa_push_parks: Mapped[bool] = mapped_column(Boolean, default=False,
                                                 server_default=text("false"))
    chat_provider: Mapped[str] = mapped_column(String(16), default="none",
                                               server_default="none")
    # Fernet token over the chat webhook URL, which is itself the credential
    chat_secret: Mapped[str | None] = mapped_column(Text)
    # an open escalation nobody claimed this long after it was made gets one reminder
    remind_after_minutes: Mapped[int] = mapped_column(Integer, default=15, server_default="15")
    remind_roles: Mapped[list[str]] = mapped_column(
        ARRAY(String(16)), default=lambda: list(DEFAULT_REMIND_ROLES),
        server_default=text("'{owner,admin}'::varchar(16)[]"))

    users: Mapped[list[User]] = relationship(back_populates="account")


class User(db.Model):
    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint(sql_in("role", ROLES), name="users_role_valid"),
        Index("users_email_active_key", text("lower(email)"), unique=True,
              postgresql_where=text("deleted_at IS NULL")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"),
                                            index=True)
    email: Mapped[str] = mapped_column(String(320))
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = created_at_column()
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    account: Mapped[Account] = relationship(back_populates="users")

    @property
    def is_senior(self) -> bool:
        return self.role in SENIOR_ROLES

    @property
    def is_admin(self) -> bool:
        return self.role in ADMIN_ROLES


class ApiToken(db.Model):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = created_at_column()
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    user: Mapped[User] = relationship()
