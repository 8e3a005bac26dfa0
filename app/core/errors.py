"""Every error answer has one shape, whoever gives it (a route, the express lane handing over
to a route, an unknown path, a wrong method, an unexpected failure):

    {"error": "<a sentence a person understands>", "errors": [{"field", "message"}, ...]}

`error` says everything (the Postproxy SDK shows it). `errors` lists problems with fields the
request really has: a field of the JSON body, a query or path parameter, a header. A problem
with the request as a whole (a body that is not JSON, a missing body) or with stored state (a
closed messaging window) has no entry there: its `errors` is empty.

Statuses: 400 for a body that cannot be parsed (not UTF-8, not JSON), 415 for a body that is
not declared as JSON, 422 for a JSON body or parameters that break a rule."""

import json
from collections.abc import Iterable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

JSON_ONLY = "Send a JSON object, with Content-Type: application/json."


class FieldProblem(BaseModel):
    field: str = Field(description="The field: a body field (dotted path), parameter or header")
    message: str


class ErrorOut(BaseModel):
    error: str = Field(description="What went wrong, as a sentence")
    errors: list[FieldProblem] = Field(
        description="The request's fields at fault; empty when the problem is not one field's"
    )


class APIError(Exception):
    def __init__(
        self, status_code: int, message: str, errors: list[dict[str, str]] | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.errors = errors


class NotFound(APIError):
    def __init__(self, what: str) -> None:
        super().__init__(404, f"{what} not found")


class Unprocessable(APIError):
    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(422, message, [{"field": field, "message": message}] if field else [])


class FieldError(ValueError):
    """Raised by a model validator for a rule that concerns particular fields (say, two
    that may not be given together): the answer then names those fields. Pydantic would
    otherwise file it under the model as a whole, which has no field name."""

    def __init__(self, message: str, *fields: str) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields


def error_response(
    status_code: int,
    message: str,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    content = {"error": message, "errors": errors or []}
    return JSONResponse(content, status_code=status_code, headers=headers)


def error_body(message: str) -> bytes:
    """The same shape, for code that answers below FastAPI (raw ASGI)."""
    return json.dumps({"error": message, "errors": []}).encode()


# Pydantic's ways of saying "this is not an object" when a model is given something else.
_NOT_AN_OBJECT = {"model_attributes_type", "model_type", "dict_type"}


def _json_type(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "null" if value is None else "not an object"


def _field_name(loc: Iterable[object]) -> str:
    # FastAPI puts where the value was ("body", "query", "path", "header") first.
    return ".".join(str(part) for part in list(loc)[1:])


def _reason(error: dict[str, Any]) -> str:
    # A validator's own sentence, without pydantic's "Value error, " in front.
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, FieldError):
        return cause.message
    if error.get("type") == "value_error" and cause is not None:
        return str(cause)
    return str(error.get("msg", "is invalid"))


def _field_problems(error: dict[str, Any]) -> list[dict[str, str]]:
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, FieldError):
        return [{"field": field, "message": cause.message} for field in cause.fields]
    field = _field_name(error.get("loc", ()))
    if not field:
        return []
    if error.get("type") == "extra_forbidden":
        return [{"field": field, "message": f"{field} is not a field this endpoint accepts"}]
    return [{"field": field, "message": f"{field}: {_reason(error)}"}]


def _body_problem(error: dict[str, Any]) -> tuple[int, str] | None:
    """The status and sentence for an error about the JSON body as a whole, if it is one."""
    if tuple(error.get("loc", ())) != ("body",):
        return None
    given = error.get("input")
    if isinstance(given, bytes):
        # FastAPI hands the raw bytes over only when the Content-Type is not JSON.
        return 415, f"The request body is not declared as JSON. {JSON_ONLY}"
    if error.get("type") == "missing":
        return 422, f"The request body is missing. {JSON_ONLY}"
    if error.get("type") in _NOT_AN_OBJECT:
        return 422, f"The request body must be a JSON object, not {_json_type(given)}."
    return None


def _not_json(error: dict[str, Any], document: object) -> str:
    position = error["loc"][-1]
    reason = (error.get("ctx") or {}).get("error", "invalid syntax")
    if isinstance(document, str) and isinstance(position, int):
        line = document.count("\n", 0, position) + 1
        column = position - document.rfind("\n", 0, position)
        reason = f"{reason} at line {line}, column {column}"
    return f"The request body is not valid JSON: {reason}."


def unparsable_body(cause: BaseException | None) -> str | None:
    """The sentence for a body FastAPI could not even hand to the JSON parser."""
    if isinstance(cause, UnicodeDecodeError):
        return (
            f"The request body is not valid JSON: it is not UTF-8 text (byte "
            f"0x{cause.object[cause.start]:02x} at position {cause.start})."
        )
    if isinstance(cause, RecursionError):
        return "The request body is not valid JSON that dmrelay can read: it is nested too deeply."
    return None


# The methods RFC 9110 defines that a route could take (CONNECT and TRACE excepted).
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route takes at this path. Routes are declared one per method, and
    the router's own 405 names only those of the first route whose path matched."""
    routes = request.app.router.routes
    allowed = []
    for method in METHODS:
        # A fresh scope: the one routed already carries what the partial match left in it.
        scope = {
            "type": "http",
            "method": method,
            "path": request.scope["path"],
            "root_path": request.scope.get("root_path", ""),
            "headers": request.scope["headers"],
        }
        if any(route.matches(scope)[0] == Match.FULL for route in routes):
            allowed.append(method)
    return allowed


def explain(problems: Sequence[Any], body: object = None) -> tuple[int, str, list[dict[str, str]]]:
    """The status, sentence and field problems for a request's validation errors (pydantic's,
    located as FastAPI locates them: "body", "query", "path" or "header" first)."""
    for error in problems:
        if error.get("type") == "json_invalid":
            return 400, _not_json(error, body), []
    whole: list[tuple[int, str]] = []
    fields: list[dict[str, str]] = []
    sentences: list[str] = []
    for error in problems:
        if (body_problem := _body_problem(error)) is not None:
            whole.append(body_problem)
            continue
        found = _field_problems(error)
        fields += found
        sentences += [f["message"] for f in found] or [_reason(error)]
    message = " ".join(sentence for _, sentence in whole)
    if sentences:
        listed = "; ".join(dict.fromkeys(sentences))
        message = f"{message} Invalid request: {listed}".strip()
    status = 415 if any(status == 415 for status, _ in whole) else 422
    return status, message, fields


def install(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return error_response(exc.status_code, exc.message, exc.errors)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(*explain(exc.errors(), exc.body))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        message = exc.detail if isinstance(exc.detail, str) else "Request failed"
        if exc.status_code == 404 and message == "Not Found":
            message = f"There is no endpoint {request.method} {request.url.path}."
        elif exc.status_code == 405:
            allowed = _allowed_methods(request)
            headers["Allow"] = ", ".join(allowed)
            message = (
                f"{request.method} is not allowed on {request.url.path}; "
                f"it takes {', '.join(allowed)}."
            )
        elif exc.status_code == 400 and (unparsable := unparsable_body(exc.__cause__)):
            message = unparsable
        return error_response(exc.status_code, message, headers=headers)
