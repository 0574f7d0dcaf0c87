"""Login tokens past their use: kept a while for the audit trail, then deleted."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import or_

from webapp.extensions import db
from webapp.models import ApiToken


def purge_old(before: datetime) -> int:
    """Delete tokens that expired, or were revoked, before `before`; returns how many."""
    result = db.session.execute(db.delete(ApiToken).where(or_(
        ApiToken.expires_at < before, ApiToken.revoked_at < before)))
    db.session.commit()
    return result.rowcount
