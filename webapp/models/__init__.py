"""SQLAlchemy models, one module per area."""
from webapp.models.accounts import ADMIN_ROLES, ROLES, SENIOR_ROLES, Account, ApiToken, User
from webapp.models.handoffs import (
    CHANNELS,
    DELIVERY_STATUSES,
    HANDOFF_STATUSES,
    INTENTS,
    URGENCIES,
    Delivery,
    Handoff,
)
from webapp.models.sessions import SESSION_STATUSES, AiSession, SessionMessage

__all__ = [
    "ADMIN_ROLES", "ROLES", "SENIOR_ROLES", "Account", "ApiToken", "User",
    "CHANNELS", "DELIVERY_STATUSES", "HANDOFF_STATUSES", "INTENTS", "URGENCIES",
    "Delivery", "Handoff",
    "SESSION_STATUSES", "AiSession", "SessionMessage",
]
