"""Marshmallow schemas shared by several blueprints."""
from marshmallow import Schema, ValidationError, fields, pre_load, validate, validates_schema


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


def text(min_len: int, max_len: int, **kwargs) -> fields.String:
    return fields.String(validate=validate.Length(min=min_len, max=max_len), **kwargs)


class NotBlank:
    """Reject strings that are only whitespace."""

    def __call__(self, value: str) -> str:
        if isinstance(value, str) and not value.strip():
            raise ValidationError("Must not be empty.")
        return value


class UserSchema(Schema):
    id = fields.Integer()
    account_id = fields.Integer()
    email = fields.String()
    name = fields.String()
    role = fields.String()
    created_at = fields.DateTime()


__all__ = [
    "NotBlank",
    "StrictSchema",
    "UserSchema",
    "ValidationError",
    "fields",
    "text",
    "validate",
    "validates_schema",
]
