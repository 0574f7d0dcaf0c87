"""Accounts (tenants) and their users: the writes the CLI, the demo and the API share."""
from __future__ import annotations

from webapp.auth import hash_password
from webapp.extensions import db
from webapp.models import Account, User


def create_account(name: str, owner_email: str, owner_name: str,
                   owner_password: str) -> tuple[Account, User]:
    """Create a tenant and its owner, committed; returns (account, owner)."""
    account = Account(name=name)
    db.session.add(account)
    db.session.flush()
    owner = User(account_id=account.id, email=owner_email, name=owner_name, role="owner",
                 password_hash=hash_password(owner_password))
    db.session.add(owner)
    db.session.commit()
    return account, owner
