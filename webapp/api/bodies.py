"""Request bodies as the API accepts them: bounded, well-formed JSON, whatever the bytes.

webargs hands the body to `json.loads` as it is. Deep nesting then ends in a RecursionError,
a lone surrogate (`"\\ud800"`) parses into a string that PostgreSQL cannot store, and a number
of a million digits costs seconds to convert: each a 500 or worse. Here such bodies are
malformed JSON (400 `bad_request`), refused before any schema or query sees them.
"""
from __future__ import annotations

import json
import math
import re
from typing import Any

from flask_smorest import Blueprint as SmorestBlueprint
from webargs import core
from webargs.flaskparser import FlaskParser, is_json_request

MAX_DEPTH = 32
MAX_NUMBER_CHARACTERS = 40
_SURROGATE = re.compile("[\ud800-\udfff]")


def _refuse(message: str, document: str) -> json.JSONDecodeError:
    return json.JSONDecodeError(message, document, 0)


def loads(data: bytes | str) -> Any:
    """json.loads, refusing nesting past MAX_DEPTH, unpaired surrogates, NaN and Infinity,
    and numbers longer than MAX_NUMBER_CHARACTERS, as JSONDecodeError."""
    document = data.decode("utf-8") if isinstance(data, bytes) else data

    def number(text: str, convert):
        if len(text) > MAX_NUMBER_CHARACTERS:
            raise _refuse("number too long", document)
        value = convert(text)
        if isinstance(value, float) and not math.isfinite(value):
            raise _refuse("number out of range", document)
        return value

    def constant(name: str):
        raise _refuse(f"{name} is not JSON", document)

    try:
        value = json.loads(document, parse_int=lambda text: number(text, int),
                           parse_float=lambda text: number(text, float),
                           parse_constant=constant)
    except RecursionError:
        raise _refuse("nested too deeply", document) from None
    _check(value, document)
    return value


def _check(value: Any, document: str) -> None:
    """Depth and strings, walked without recursion."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise _refuse("unpaired surrogate in a string", document)
        elif isinstance(item, (dict, list)):
            if depth > MAX_DEPTH:
                raise _refuse(f"nested deeper than {MAX_DEPTH} levels", document)
            if isinstance(item, dict):
                stack.extend((key, depth) for key in item)
                stack.extend((child, depth + 1) for child in item.values())
            else:
                stack.extend((child, depth + 1) for child in item)


class BoundedJsonParser(FlaskParser):
    """webargs' Flask parser reading bodies with `loads`."""

    def _raw_load_json(self, req) -> Any:
        if not is_json_request(req):
            return core.missing
        return loads(req.get_data(cache=True))


class Blueprint(SmorestBlueprint):
    """flask-smorest's Blueprint, parsing request bodies with BoundedJsonParser."""

    ARGUMENTS_PARSER = BoundedJsonParser()

    def refuses(self, status: int, description: str):
        """Document an error answer that only the view's service knows it may give (a
        conflict, a refusal by ownership), in the one error shape; the answers that follow
        from the route's shape are derived (webapp.api.openapi)."""
        from webapp.errors import ErrorSchema
        return self.alt_response(status, schema=ErrorSchema, description=description)


def guard_request() -> None:
    """Before anything reads it: a body declared larger than MAX_CONTENT_LENGTH is 413 at
    once (werkzeug also stops a chunked one at the limit), and a query string past
    MAX_QUERY_STRING_BYTES is 422, so no route sees either."""
    from flask import current_app, request
    from werkzeug.exceptions import RequestEntityTooLarge

    from webapp.errors import ApiError

    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if limit is not None and (request.content_length or 0) > limit:
        raise RequestEntityTooLarge()
    if len(request.query_string) > current_app.config["MAX_QUERY_STRING_BYTES"]:
        raise ApiError(422, "validation_error", "the query string is too long",
                       {"query": [f"At most {current_app.config['MAX_QUERY_STRING_BYTES']} "
                                  "bytes."]})
