"""Graph API errors, in Meta's shape (meta doc §3)."""

import secrets

from fastapi.responses import JSONResponse

# One realistic HTTP status per code (meta doc §3.1); clients must key on the code, not on this.
STATUS_BY_CODE = {1: 500, 2: 500, 4: 403, 10: 403, 17: 403, 32: 403, 200: 403, 613: 403}
THROTTLE = (613, 2534040, "(#613) Calls to this api have exceeded the rate limit.")
TRANSIENT_ERRORS = [
    (1, None, "An unknown error occurred"),
    (2, None, "An unexpected error has occurred. Please retry your request later."),
    (4, None, "(#4) Application request limit reached"),
    THROTTLE,
]


class GraphError(Exception):
    def __init__(
        self,
        code: int,
        message: str,
        subcode: int | None = None,
        *,
        is_transient: bool = False,
        error_type: str = "OAuthException",
    ):
        super().__init__(message)
        self.code, self.message, self.subcode = code, message, subcode
        self.is_transient, self.error_type = is_transient, error_type

    @classmethod
    def transient(cls, code: int, subcode: int | None, message: str) -> "GraphError":
        """One of the (code, subcode, message) triples above, flagged retryable as Meta does."""
        return cls(code, message, subcode, is_transient=True)

    def response(self) -> JSONResponse:
        error: dict[str, str | int | bool] = {
            "message": self.message,
            "type": self.error_type,
            "code": self.code,
        }
        if self.subcode is not None:
            error["error_subcode"] = self.subcode
        if self.is_transient:
            error["is_transient"] = True
        error["fbtrace_id"] = secrets.token_urlsafe(8)
        return JSONResponse({"error": error}, status_code=STATUS_BY_CODE.get(self.code, 400))


def unsupported(method: str, node: str) -> GraphError:
    return GraphError(
        100,
        f"Unsupported {method.lower()} request. Object with ID '{node}' does not exist, cannot be "
        "loaded due to missing permissions, or does not support this operation. Please read the "
        "Graph API documentation at https://developers.facebook.com/docs/graph-api",
        33,
        error_type="GraphMethodException",
    )
