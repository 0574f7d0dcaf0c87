"""The one error shape of the API, for every error the app can answer."""
from __future__ import annotations

import logging
from typing import Any

from flask import Flask, current_app, jsonify
from flask_smorest import Api
from marshmallow import Schema, fields
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

from webapp.services.errors import Busy, Conflict, DomainError, Forbidden, Invalid, NotFound

log = logging.getLogger(__name__)

CODES_BY_STATUS = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 409: "conflict", 413: "payload_too_large",
    415: "unsupported_media_type", 422: "validation_error", 429: "rate_limited",
    500: "internal_error", 503: "unavailable",
}


class ApiError(Exception):
    """An error the API answers in its one shape; raise it anywhere in a request."""

    def __init__(self, status: int, code: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details
        self.headers: dict[str, str] = {}


def not_found(what: str = "resource") -> ApiError:
    return ApiError(404, "not_found", f"{what} not found")


def error_response(status: int, code: str, message: str, details: Any = None):
    body: dict[str, Any] = {"code": code, "message": message}
    if details:
        body["details"] = details
    response = jsonify({"error": body})
    response.status_code = status
    return response


def _first_message(details: Any, path: str = "") -> str:
    """A readable one-liner from nested marshmallow messages: 'field: message'."""
    if isinstance(details, dict):
        for key, value in details.items():
            name = path if key == "_schema" else (f"{path}.{key}" if path else str(key))
            return _first_message(value, name)
    if isinstance(details, list) and details:
        return _first_message(details[0], path)
    text = str(details).rstrip(".")
    text = text[:1].lower() + text[1:]
    return f"{path}: {text}" if path else text


def _webargs_details(messages: dict) -> dict:
    # webargs nests messages by location; clients only care about the field names. A message
    # about the body as a whole (not JSON at all) is the body's, so details stay an object
    if len(messages) == 1:
        details = next(iter(messages.values()))
        return details if isinstance(details, dict) else {"body": details}
    merged: dict = {}
    for value in messages.values():
        if isinstance(value, dict):
            merged.update(value)
    return merged or messages


class ErrorBodySchema(Schema):
    code = fields.String(required=True, metadata={
        "description": "stable and machine-readable: `validation_error`, `not_found`, ..."})
    message = fields.String(required=True)
    details = fields.Dict(metadata={
        "description": "the messages per field, or what the code needs (`claimed_by`, "
                       "`retry_after`)"})


class ErrorSchema(Schema):
    """The one error shape."""
    error = fields.Nested(ErrorBodySchema, required=True)


class ErrorShapeApi(Api):
    """flask-smorest's Api, answering HTTP errors in the API's one shape, and documenting
    that shape as the answer of every error status each operation can give (see
    webapp.api.openapi); no catch-all `default` response, so the document names them all."""

    ERROR_SCHEMA = ErrorSchema
    DEFAULT_ERROR_RESPONSE_NAME = None

    def _init_spec(self, **kwargs):
        from webapp.api.openapi import ErrorAnswers
        kwargs["extra_plugins"] = [*(kwargs.get("extra_plugins") or ()),
                                   ErrorAnswers(lambda: self._app)]
        super()._init_spec(**kwargs)
        from webapp.api.openapi import register_components
        from webapp.api.schemas import no_nul_pattern
        register_components(self.spec, self.ERROR_SCHEMA)
        self.ma_plugin.converter.add_attribute_function(no_nul_pattern)

    def handle_http_exception(self, error: HTTPException):
        status = error.code or 500
        code = CODES_BY_STATUS.get(status, "error")
        data = getattr(error, "data", None) or {}
        messages = data.get("messages")
        if messages:
            details = _webargs_details(messages)
            if status == 400 and "json" in messages:
                return error_response(400, "bad_request", "request body is not valid JSON",
                                      details)
            return error_response(status, code, _first_message(details), details)
        message = data.get("message") or (error.description or error.name)
        headers = dict(data.get("headers") or {})
        if status == 413:
            message = (f"the request body is larger than "
                       f"{current_app.config['MAX_CONTENT_LENGTH']} bytes")
        response = error_response(status, code, str(message).rstrip("."))
        response.headers.update(headers)
        if status == 413:   # the rest of the body is not read: this connection is done
            response.headers["Connection"] = "close"
        if status == 405 and error.get_response().headers.get("Allow"):
            response.headers["Allow"] = error.get_response().headers["Allow"]
        return response


STATUS_OF = {NotFound: 404, Forbidden: 403, Conflict: 409, Invalid: 422, Busy: 429}


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(DomainError)
    def _domain_error(error: DomainError):
        status = next((code for kind, code in STATUS_OF.items() if isinstance(error, kind)),
                      400)
        response = error_response(status, error.code, error.message, error.details)
        if isinstance(error, Busy):
            response.headers["Retry-After"] = str(error.retry_after)
        return response

    @app.errorhandler(ApiError)
    def _api_error(error: ApiError):
        response = error_response(error.status, error.code, error.message, error.details)
        response.headers.update(error.headers)
        return response

    @app.errorhandler(OperationalError)
    @app.errorhandler(PoolTimeout)
    def _database_down(error: Exception):
        log.warning("database unavailable: %s", error.__class__.__name__)
        _rollback()
        return error_response(503, "unavailable", "database unavailable")

    @app.errorhandler(DBAPIError)
    def _database_error(error: DBAPIError):
        log.exception("database error")
        _rollback()
        if getattr(error, "connection_invalidated", False):
            return error_response(503, "unavailable", "database unavailable")
        return error_response(500, "internal_error", "internal error")

    @app.errorhandler(Exception)
    def _unexpected(error: Exception):
        log.exception("unhandled error")
        _rollback()
        return error_response(500, "internal_error", "internal error")


def _rollback() -> None:
    # the app's Flask-SQLAlchemy, found through the app: this module is imported by
    # webapp.extensions, so it does not import it back
    try:
        current_app.extensions["sqlalchemy"].session.rollback()
    except Exception:  # the connection may be gone too; the answer matters more
        log.debug("rollback failed", exc_info=True)
