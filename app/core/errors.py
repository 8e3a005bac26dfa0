"""Every error is JSON with an `error` sentence (the Postproxy SDK reads it), plus
`errors` (a list of field problems) on 422."""

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException


class APIError(Exception):
    def __init__(
        self, status_code: int, message: str, errors: list[dict[str, Any]] | None = None
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


def error_response(
    status_code: int, message: str, errors: list[dict[str, Any]] | None = None
) -> JSONResponse:
    content: dict[str, Any] = {"error": message}
    if errors is not None:
        content["errors"] = errors
    return JSONResponse(content, status_code=status_code)


def _field_name(loc: tuple[Any, ...]) -> str:
    # Drop the "body"/"query"/"path" prefix FastAPI puts first.
    if loc and loc[0] in {"body", "query", "path", "header"}:
        loc = loc[1:]
    return ".".join(str(part) for part in loc) or "body"


def _describe(error: dict[str, Any]) -> dict[str, Any]:
    field = _field_name(tuple(error.get("loc", ())))
    if error.get("type") == "extra_forbidden":
        message = f"{field} is not a field this endpoint accepts"
    elif error.get("type") == "json_invalid":
        message = "the request body is not valid JSON"
    else:
        message = f"{field}: {error.get('msg', 'is invalid')}"
    return {"field": field, "message": message}


def install(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return error_response(exc.status_code, exc.message, exc.errors)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [_describe(e) for e in exc.errors()]
        summary = "; ".join(e["message"] for e in errors) or "the request is invalid"
        return error_response(422, f"Invalid request: {summary}", errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "Request failed"
        if exc.status_code == 404 and message == "Not Found":
            message = f"No route {request.method} {request.url.path}"
        return error_response(exc.status_code, message)
