"""The error answers of the OpenAPI document, derived from how each route is built.

Every error status an operation can really answer is listed with the one error shape
(webapp.errors.ErrorSchema), and there is no catch-all `default`, so a client generated from
the document parses every error it gets and a fuzzer can tell an undocumented status. What
follows from a route's shape is derived here, once:

- every route: 413 (the body limit), 422 (the query string limit), 503 (PostgreSQL down:
  every operation reads it, the token check first);
- a JSON body: 400 (not well-formed JSON) and 422 (fields);
- a token needed (all but webapp.auth.PUBLIC_ENDPOINTS): 401, and the bearer scheme;
- a role check on the view (webapp.auth.require_senior / require_admin): 403;
- an object in the path: 404.

What only the service knows (a conflict, a refusal by ownership, a busy password check) each
view declares with `bp.refuses(status, description)` (webapp.api.bodies.Blueprint).
"""
from __future__ import annotations

from collections.abc import Callable

from apispec import BasePlugin
from flask import Flask
from flask_smorest.utils import prepare_response

BEARER = "bearer"
ERROR_CONTENT = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
METHODS = ("get", "put", "post", "delete", "patch")

# status: (response component, description)
ANSWERS = {
    400: ("BadRequest", "`bad_request`: the body is not well-formed JSON (or it nests too "
                        "deep, holds an unpaired surrogate or a number too long)"),
    401: ("Unauthorized", "`unauthorized`: no bearer token, or a bad, expired or revoked one"),
    404: ("NotFound", "`not_found`: no such object in the caller's account"),
    413: ("PayloadTooLarge", "`payload_too_large`: the body is larger than MAX_CONTENT_LENGTH"),
    422: ("ValidationError", "`validation_error`: a field missing, unknown, of the wrong type "
                             "or out of range, or the query string is longer than "
                             "MAX_QUERY_STRING_BYTES"),
    503: ("Unavailable", "`unavailable`: PostgreSQL (or what the operation needs) is down"),
}
EVERY_ROUTE = (413, 422, 503)


def register_components(spec, error_schema) -> None:
    """The error responses every operation refers to, and the bearer scheme."""
    spec.components.security_scheme(BEARER, {"type": "http", "scheme": "bearer"})
    for name, description in ANSWERS.values():
        response = {"description": description, "schema": error_schema}
        prepare_response(response, spec, "application/json")
        spec.components.response(name, response, lazy=True)


def error_statuses(operation: dict, public: bool, role_rule: str | None,
                   path_arguments: bool) -> dict[int, str | dict]:
    """The error answers an operation of this shape can give: status -> response."""
    statuses: dict[int, str | dict] = {status: ANSWERS[status][0] for status in EVERY_ROUTE}
    if "requestBody" in operation:
        statuses[400] = ANSWERS[400][0]
    if not public:
        statuses[401] = ANSWERS[401][0]
    if role_rule:
        statuses[403] = {"description": f"`forbidden`: {role_rule}", "content": ERROR_CONTENT}
    if path_arguments:
        statuses[404] = ANSWERS[404][0]
    return statuses


class ErrorAnswers(BasePlugin):
    """apispec plugin: completes each operation with its derived error answers and its
    security, as the operation is added to the document."""

    def __init__(self, app: Callable[[], Flask]) -> None:
        self.app = app

    def operation_helper(self, path=None, operations=None, **kwargs) -> None:
        from webapp.auth import PUBLIC_ENDPOINTS
        rule = kwargs.get("rule")
        if rule is None or not operations:
            return
        view = self.app().view_functions.get(rule.endpoint)
        public = rule.endpoint in PUBLIC_ENDPOINTS
        for method, operation in operations.items():
            if method not in METHODS:
                continue
            responses = operation.setdefault("responses", {})
            documented = {int(status): status for status in responses
                          if str(status).isdigit()}
            for status, response in error_statuses(
                    operation, public, getattr(view, "role_rule", None),
                    bool(rule.arguments)).items():
                # a view's own description of a status stands; a bare HTTP phrase does not
                if status in documented and isinstance(responses[documented[status]], dict):
                    continue
                responses.pop(documented.get(status), None)
                responses[status] = response
            operation["security"] = [] if public else [{BEARER: []}]
