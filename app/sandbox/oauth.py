"""Instagram Login as the sandbox plays it (meta doc §1, §11.6): the authorize page approves at
once (or refuses, when told to) and redirects back with a single-use code; the code becomes a
short-lived token, that a long-lived one (60 days), refreshable once at least 24 hours old.
`/me` answers for the account a token was issued to.

Token exchanges authenticate with the Instagram app's id and secret (`client_id`,
`client_secret`); their errors have Meta's own shape for them ({"error_type", "code",
"error_message"}), the Graph ones Graph's.
"""

import hashlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict

from app.core.settings import Settings
from app.sandbox.errors import GraphError

SCOPE_REQUIRED = "instagram_business_basic"
CODE_SECONDS = 3600
LONG_LIVED_SECONDS = 5_184_000  # 60 days
REFRESH_AFTER_SECONDS = 86_400


class OAuthAccount(BaseModel):
    """The Instagram professional account the authorize page signs in as."""

    model_config = ConfigDict(extra="forbid")

    user_id: str = "17841400000000001"
    username: str = "sandbox_user"
    name: str = "Sandbox User"
    profile_picture_url: str | None = None


class OAuthControl(BaseModel):
    """POST /_sandbox/oauth: who approves, or that the user refuses."""

    model_config = ConfigDict(extra="forbid")

    account: OAuthAccount = OAuthAccount()
    deny: bool = False


@dataclass
class Issued:
    account: OAuthAccount
    long_lived: bool
    issued_at: float
    expires_at: float


@dataclass
class OAuth:
    control: OAuthControl = field(default_factory=OAuthControl)
    # code -> (account, redirect_uri, issued at); a code is used once.
    codes: dict[str, tuple[OAuthAccount, str, float]] = field(default_factory=dict)
    tokens: dict[str, Issued] = field(default_factory=dict)
    # Every token-endpoint call, for tests: its path and grant type.
    calls: list[dict[str, Any]] = field(default_factory=list)
    # Accounts subscribed to webhooks (POST subscribed_apps), with their fields.
    subscribed: dict[str, str] = field(default_factory=dict)
    # Every DELETE subscribed_apps, in order: the account (or Page) unsubscribed.
    unsubscribed: list[str] = field(default_factory=list)

    def issue(self, account: OAuthAccount, long_lived: bool) -> tuple[str, Issued]:
        now = time.time()
        token = ("IGAA" if long_lived else "IGQV") + secrets.token_urlsafe(24)
        seconds = LONG_LIVED_SECONDS if long_lived else 3600
        issued = Issued(account, long_lived, now, now + seconds)
        self.tokens[token] = issued
        return token, issued

    def me(self, token: str) -> dict[str, Any] | None:
        """/me for a token the sandbox issued (None for any other)."""
        issued = self.tokens.get(token)
        if issued is None:
            return None
        if issued.expires_at <= time.time():
            raise GraphError(190, "Error validating access token: Session has expired.", 463)
        account = issued.account
        return {
            "user_id": account.user_id,
            "username": account.username,
            "name": account.name,
            "profile_picture_url": account.profile_picture_url,
            # The app-scoped id differs from the account's id, as at Meta.
            "id": str(int(hashlib.sha256(account.user_id.encode()).hexdigest(), 16) % 10**16),
        }


def _oauth_error(message: str) -> JSONResponse:
    return JSONResponse(
        {"error_type": "OAuthException", "code": 400, "error_message": message}, status_code=400
    )


def authorize(params: dict[str, Any], oauth: OAuth, settings: Settings) -> Response:
    """GET /oauth/authorize: approve (or refuse) at once, back to redirect_uri."""
    redirect_uri = params.get("redirect_uri")
    scopes = str(params.get("scope", "")).replace(" ", ",").split(",")
    if params.get("client_id") != settings.instagram_app_id:
        return _oauth_error("Invalid platform app")
    if not isinstance(redirect_uri, str) or redirect_uri != settings.instagram_redirect_uri:
        return _oauth_error("Invalid redirect_uri")
    if params.get("response_type") != "code" or SCOPE_REQUIRED not in scopes:
        return _oauth_error(f"Invalid scope: {SCOPE_REQUIRED} is required")
    answer: dict[str, str] = {}
    if oauth.control.deny:
        answer = {
            "error": "access_denied",
            "error_reason": "user_denied",
            "error_description": "The user denied your request.",
        }
    else:
        code = secrets.token_urlsafe(32)
        oauth.codes[code] = (oauth.control.account, redirect_uri, time.time())
        answer["code"] = code
    if "state" in params:
        answer["state"] = str(params["state"])
    return RedirectResponse(f"{redirect_uri}?{urlencode(answer)}#_", status_code=302)


def exchange_code(params: dict[str, Any], oauth: OAuth, settings: Settings) -> Response:
    """POST /oauth/access_token: a code for a short-lived token (Meta's documented shape)."""
    oauth.calls.append({"path": "oauth/access_token", "grant_type": params.get("grant_type")})
    if (
        params.get("client_id") != settings.instagram_app_id
        or params.get("client_secret") != settings.instagram_app_secret
    ):
        return _oauth_error("Invalid Client Secret")
    found = oauth.codes.pop(str(params.get("code")), None)
    if (
        params.get("grant_type") != "authorization_code"
        or found is None
        or found[1] != params.get("redirect_uri")
        or time.time() - found[2] > CODE_SECONDS
    ):
        return _oauth_error("Matching code was not found or was already used")
    token, _ = oauth.issue(found[0], long_lived=False)
    permissions = "instagram_business_basic,instagram_business_manage_messages"
    return JSONResponse(
        {"data": [{"access_token": token, "user_id": found[0].user_id, "permissions": permissions}]}
    )


def long_lived(params: dict[str, Any], token: str, oauth: OAuth, settings: Settings) -> Response:
    """GET /access_token?grant_type=ig_exchange_token: short-lived to long-lived."""
    oauth.calls.append({"path": "access_token", "grant_type": params.get("grant_type")})
    issued = oauth.tokens.get(token)
    if params.get("client_secret") != settings.instagram_app_secret:
        raise GraphError(101, "Error validating client secret.")
    if params.get("grant_type") != "ig_exchange_token" or issued is None or issued.long_lived:
        raise GraphError(100, "(#100) Invalid grant_type or access_token")
    new, fresh = oauth.issue(issued.account, long_lived=True)
    return _token_answer(new, fresh)


def refresh(params: dict[str, Any], token: str, oauth: OAuth) -> Response:
    """GET /refresh_access_token?grant_type=ig_refresh_token: only a long-lived token at least
    24 hours old and unexpired."""
    oauth.calls.append({"path": "refresh_access_token", "grant_type": params.get("grant_type")})
    issued = oauth.tokens.get(token)
    if params.get("grant_type") != "ig_refresh_token" or issued is None or not issued.long_lived:
        raise GraphError(100, "(#100) Invalid grant_type or access_token")
    if time.time() - issued.issued_at < REFRESH_AFTER_SECONDS:
        raise GraphError(10, "(#10) Token is not at least 24 hours old and cannot be refreshed")
    new, fresh = oauth.issue(issued.account, long_lived=True)
    return _token_answer(new, fresh)


def _token_answer(token: str, issued: Issued) -> JSONResponse:
    return JSONResponse(
        {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": int(issued.expires_at - time.time()),
        }
    )
