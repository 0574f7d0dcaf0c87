"""Marshmallow schemas shared by several blueprints."""
from marshmallow import Schema, ValidationError, fields, pre_load, validate, validates_schema

from webapp.models.accounts import ROLES


class StrictSchema(Schema):
    """Request bodies: unknown fields are refused (marshmallow's default, made explicit), and
    so are NUL characters, which PostgreSQL cannot store in text."""

    class Meta:
        unknown = "raise"

    @pre_load
    def refuse_nul_characters(self, data, **_kwargs):
        if isinstance(data, dict):
            bad = {name: ["Must not contain NUL characters."] for name, value in data.items()
                   if isinstance(value, str) and "\x00" in value}
            if bad:
                raise ValidationError(bad)
        return data


class StrictBoolean(fields.Boolean):
    """true or false, as JSON spells them: marshmallow's Boolean also takes 0, 1.0, "no",
    "on" and the like, which the document's `type: boolean` does not."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


def text(min_len: int, max_len: int, **kwargs) -> fields.String:
    return fields.String(validate=validate.Length(min=min_len, max=max_len), **kwargs)


class NotBlank:
    """Reject strings that are only whitespace."""

    def __call__(self, value: str) -> str:
        if isinstance(value, str) and not value.strip():
            raise ValidationError("Must not be empty.")
        return value


NO_NUL = r"^[^\u0000]*$"
# what str.strip() strips, spelled out: regex engines disagree on what \s covers
WHITESPACE = (r"\u0009-\u000d\u001c-\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029"
              r"\u202f\u205f\u3000")
NOT_BLANK = rf"^[^\u0000]*[^{WHITESPACE}\u0000][^\u0000]*$"


def not_blank_text(min_len: int, max_len: int, **kwargs) -> fields.String:
    """Text that must hold something besides whitespace (and, as every body's text, no
    NUL); the OpenAPI document says so too."""
    return fields.String(validate=[validate.Length(min=min_len, max=max_len), NotBlank()],
                         metadata={"pattern": NOT_BLANK}, **kwargs)


def no_nul_pattern(self, field: fields.Field, ret: dict, **_kwargs) -> dict:
    """apispec attribute function: a text field of a request (StrictSchema) refuses NUL
    characters, so the document says so, unless a pattern or choices already do."""
    if (isinstance(field, fields.String) and isinstance(field.parent, StrictSchema)
            and "pattern" not in ret and "enum" not in ret):
        return {"pattern": NO_NUL}
    return {}


class UserSchema(Schema):
    id = fields.Integer(required=True)
    account_id = fields.Integer(required=True)
    email = fields.String(required=True)
    name = fields.String(required=True)
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    created_at = fields.DateTime(required=True)


__all__ = [
    "NotBlank",
    "StrictBoolean",
    "StrictSchema",
    "UserSchema",
    "ValidationError",
    "fields",
    "not_blank_text",
    "text",
    "validate",
    "validates_schema",
]
