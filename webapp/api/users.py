"""The account's users: list, create and soft-delete."""
from marshmallow import Schema

from webapp import auth
from webapp.api.bodies import Blueprint
from webapp.api.schemas import StrictSchema, UserSchema, fields, not_blank_text, validate
from webapp.extensions import db
from webapp.models import ROLES, User
from webapp.services import accounts

bp = Blueprint("users", __name__, description="Users of the caller's account")


class UserCreateSchema(StrictSchema):
    email = fields.Email(required=True, validate=validate.Length(max=320))
    name = not_blank_text(1, 200, required=True)
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    password = fields.String(required=True, validate=validate.Length(min=8, max=1024))


class UserListSchema(Schema):
    items = fields.List(fields.Nested(UserSchema), required=True)


@bp.get("/users")
@bp.response(200, UserListSchema)
def list_users():
    users = db.session.scalars(
        accounts.active_users(auth.current_user().account_id).order_by(User.id)).all()
    return {"items": users}


@bp.post("/users")
@auth.require_admin
@bp.arguments(UserCreateSchema)
@bp.response(201, UserSchema)
@bp.refuses(403, "`forbidden`: requires an admin or owner; only an owner may create an owner")
@bp.refuses(409, "`email_taken`: a user with this email already exists")
@bp.refuses(429, "`rate_limited`: too many password hashes at once; try again after "
                 "`Retry-After`")
def create_user(body):
    return accounts.add_user(auth.current_user(), body["email"], body["name"], body["role"],
                             body["password"])


@bp.delete("/users/<int:user_id>")
@auth.require_admin
@bp.response(204)
@bp.refuses(403, "`forbidden`: requires an admin or owner; only an owner may delete an owner")
@bp.refuses(409, "`conflict`: a user cannot delete themself")
def delete_user(user_id: int):
    accounts.remove_user(auth.current_user(), user_id)
    return ""
