"""SQLAlchemy models, one module per area."""
from webapp.models.accounts import ADMIN_ROLES, ROLES, SENIOR_ROLES, Account, ApiToken, User
from webapp.models.sessions import SESSION_STATUSES, AiSession, SessionMessage

__all__ = [
    "ADMIN_ROLES",
    "ROLES",
    "SENIOR_ROLES",
    "SESSION_STATUSES",
    "Account",
    "AiSession",
    "ApiToken",
    "SessionMessage",
    "User",
]
