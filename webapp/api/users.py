"""The account's users: list, create and soft-delete."""
from marshmallow import Schema
from sqlalchemy.exc import IntegrityError

from webapp import auth, live
from webapp.api.bodies import Blueprint
from webapp.api.schemas import NotBlank, StrictSchema, UserSchema, fields, validate
from webapp.errors import ApiError, not_found
from webapp.extensions import db
from webapp.models import ROLES, ApiToken, User
from webapp.models.base import utcnow

bp = Blueprint("users", __name__, description="Users of the caller's account")


class UserCreateSchema(StrictSchema):
    email = fields.Email(required=True, validate=validate.Length(max=320))
    name = fields.String(required=True, validate=[validate.Length(min=1, max=200), NotBlank()])
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    password = fields.String(required=True, validate=validate.Length(min=8, max=1024))


class UserListSchema(Schema):
    items = fields.List(fields.Nested(UserSchema))


def active_users_query(account_id: int):
    return db.select(User).where(User.account_id == account_id, User.deleted_at.is_(None))


@bp.get("/users")
@bp.response(200, UserListSchema)
def list_users():
    users = db.session.scalars(
        active_users_query(auth.current_user().account_id).order_by(User.id)).all()
    return {"items": users}


@bp.post("/users")
@auth.require_admin
@bp.arguments(UserCreateSchema)
@bp.response(201, UserSchema)
def create_user(body):
    caller = auth.current_user()
    if body["role"] == "owner" and caller.role != "owner":
        raise ApiError(403, "forbidden", "only an owner may create another owner")
    user = User(account_id=caller.account_id, email=body["email"].strip(),
                name=body["name"].strip(), role=body["role"],
                password_hash=auth.hash_password(body["password"]))
    db.session.add(user)
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise ApiError(409, "email_taken", "a user with this email already exists") from None
    return user


@bp.delete("/users/<int:user_id>")
@auth.require_admin
@bp.response(204)
def delete_user(user_id: int):
    caller = auth.current_user()
    user = db.session.scalars(active_users_query(caller.account_id).where(
        User.id == user_id)).one_or_none()
    if user is None:
        raise not_found("user")
    if user.id == caller.id:
        raise ApiError(409, "conflict", "you cannot delete yourself")
    if user.role == "owner" and caller.role != "owner":
        raise ApiError(403, "forbidden", "only an owner may delete an owner")
    user.deleted_at = utcnow()
    db.session.execute(db.update(ApiToken).where(
        ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None)).values(revoked_at=utcnow()))
    db.session.commit()
    live.announce_access_change(caller.account_id)
    return ""
