"""The OpenAPI document (/openapi.json, /docs): FastAPI's, completed with what it cannot see.

FastAPI documents what a route declares. dmrelay refuses requests in more places than that:
the edge (app/core/edge.py: unreadable paths and queries, body caps), the error handlers
(app/core/errors.py: 400, 415 and 422, all as `ErrorOut`), authentication, Idempotency-Key,
and the 503 of a dependency outage (app/core/request_id.py). Each of those applies to an
operation by its shape, so the statuses are derived here from that shape, in one place, and
every error is documented with the one schema dmrelay answers with. A route declares only
the refusals of its own (`responses={403: {"description": ...}}`).
"""

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema

from app.core.errors import ErrorOut
from app.core.idempotency import HEADER as IDEMPOTENCY_HEADER

ERROR_REF = {"$ref": "#/components/schemas/ErrorOut"}

DESCRIPTIONS = {
    400: "The body is not valid JSON (or not UTF-8)",
    401: "No API key, or not a valid one",
    404: "Not found, or not visible to this API key (also: a profile_group_id it may not use)",
    409: "A request with this Idempotency-Key is still being processed: retry in a moment",
    413: "The body is larger than this endpoint accepts",
    415: "The body is not declared as JSON (Content-Type: application/json)",
    422: "A field, parameter or header breaks a rule (`errors` names it), or the request "
    "cannot be done now: the 24-hour window is closed, the profile is not active",
    503: "PostgreSQL or Redis is unavailable: retry after Retry-After seconds",
}

RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying",
        "schema": {"type": "integer"},
    }
}
REPLAYED = {
    "Idempotent-Replayed": {
        "description": "`true` when this is the stored answer to an earlier request with the "
        "same Idempotency-Key",
        "schema": {"type": "string", "enum": ["true"]},
    }
}


def _derived(operation: dict[str, Any]) -> set[int]:
    """The error statuses an operation can answer with, from its shape."""
    parameters = operation.get("parameters", [])
    places = {parameter["in"] for parameter in parameters}
    names = {parameter["name"] for parameter in parameters}
    body = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
    statuses: set[int] = set()
    if "path" in places:
        statuses.add(404)  # an unknown id, or a path the edge cannot read
    if places & {"query", "header"}:
        statuses.add(422)  # a value breaking its rule (a NUL in a query, at the edge)
    if "security" in operation:
        statuses |= {401, 404, 503}
    if body:
        statuses |= {413, 503}  # the edge's cap; stored work
        schema = body.get("schema", {})
        # A model FastAPI reads (optional or not): parsed, then validated.
        if "$ref" in schema or any("$ref" in one for one in schema.get("anyOf", [])):
            statuses |= {400, 415, 422}
    if IDEMPOTENCY_HEADER in names:
        statuses |= {409, 422}
    return statuses


def _complete(operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation["responses"]
    # FastAPI's own 422 ({"detail": [...]}), which dmrelay never answers with.
    if "HTTPValidationError" in str(responses.get("422", {})):
        del responses["422"]
    declared = {int(status) for status in responses if status.isdigit() and int(status) >= 400}
    for status in sorted(declared | _derived(operation)):
        given = responses.get(str(status), {})
        response: dict[str, Any] = {
            "description": given.get("description") or DESCRIPTIONS[status],
            "content": {"application/json": {"schema": ERROR_REF}},
        }
        if status == 503:
            response["headers"] = RETRY_AFTER
        responses[str(status)] = response
    if IDEMPOTENCY_HEADER in {p["name"] for p in operation.get("parameters", [])}:
        for code, response in responses.items():
            if code.startswith("2"):
                response["headers"] = REPLAYED
    # Sorted, so that the document reads in order.
    operation["responses"] = dict(sorted(responses.items()))


def document(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is None:
        spec = get_openapi(
            title=app.title,
            version=app.version,
            openapi_version=app.openapi_version,
            summary=app.summary,
            description=app.description,
            routes=app.routes,
        )
        for operations in spec["paths"].values():
            for operation in operations.values():
                _complete(operation)
        schemas = spec["components"]["schemas"]
        _, errors = models_json_schema(
            [(ErrorOut, "serialization")], ref_template="#/components/schemas/{model}"
        )
        schemas.update(errors["$defs"])
        # FastAPI's validation error shape: dmrelay never answers with it.
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        schemas["ErrorOut"]["examples"] = [
            {
                "error": "Invalid request: body: Value error, must hold some text, not only "
                "whitespace",
                "errors": [
                    {"field": "body", "message": "body: must hold some text, not only whitespace"}
                ],
            }
        ]
        app.openapi_schema = spec
    return app.openapi_schema


def install(app: FastAPI) -> None:
    app.openapi = lambda: document(app)  # type: ignore[method-assign]
