"""Accounts (tenants) and their users: the writes the CLI, the demo and the API share."""
from __future__ import annotations

from sqlalchemy.exc import IntegrityError

from webapp.extensions import db
from webapp.live import announce_access_change
from webapp.models import Account, ApiToken, User
from webapp.models.base import utcnow
from webapp.passwords import hash_password
from webapp.services.errors import Conflict, Forbidden, NotFound


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


def active_users(account_id: int):
    """The account's users that are not soft-deleted, as a query to refine."""
    return db.select(User).where(User.account_id == account_id, User.deleted_at.is_(None))


def add_user(caller: User, email: str, name: str, role: str, password: str) -> User:
    """A new user of the caller's account, committed. Only an owner makes another owner."""
    if role == "owner" and caller.role != "owner":
        raise Forbidden("only an owner may create another owner")
    user = User(account_id=caller.account_id, email=email.strip(), name=name.strip(),
                role=role, password_hash=hash_password(password))
    db.session.add(user)
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise Conflict("email_taken", "a user with this email already exists") from None
    return user


def remove_user(caller: User, user_id: int) -> None:
    """Soft-delete a user of the caller's account and revoke their tokens; their open
    streams are told to re-check access."""
    user = db.session.scalars(active_users(caller.account_id).where(
        User.id == user_id)).one_or_none()
    if user is None:
        raise NotFound("user")
    if user.id == caller.id:
        raise Conflict("conflict", "you cannot delete yourself")
    if user.role == "owner" and caller.role != "owner":
        raise Forbidden("only an owner may delete an owner")
    user.deleted_at = utcnow()
    db.session.execute(db.update(ApiToken).where(
        ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None)).values(revoked_at=utcnow()))
    db.session.commit()
    announce_access_change(caller.account_id)
