from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from app.api_keys.service import PrincipalCache
from app.core import ids
from app.core.deps import Session
from app.core.errors import APIError, NotFound


@dataclass(frozen=True)
class Scope:
    """Who is asking, and which profile group (if any) their request is confined to."""

    api_key_id: int
    profile_group_id: int | None
    # Whether the key itself is account-wide (it may manage groups and keys), even when the
    # request confined itself to one group with `profile_group_id`.
    account_wide: bool = False

    def require_account_wide(self, action: str) -> None:
        """Refuse a group's key what only an account-wide key may do."""
        if not self.account_wide:
            raise APIError(403, f"Only an account-wide API key can {action}")


def bearer_token(authorization: str) -> str | None:
    """The key in an `Authorization: Bearer <key>` header's value, if that is its form."""
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def authenticate(cache: PrincipalCache, session: AsyncSession, authorization: str) -> Scope:
    """The scope of the key in an Authorization header's value (the API's and /mcp's)."""
    token = bearer_token(authorization)
    if token is None:
        raise APIError(401, "Missing API key: send it as 'Authorization: Bearer <key>'")
    principal = await cache.resolve(session, token)
    if principal is None:
        raise APIError(401, "Invalid API key")
    return Scope(
        api_key_id=principal.api_key_id,
        profile_group_id=principal.profile_group_id,
        account_wide=principal.profile_group_id is None,
    )


# Declared for the OpenAPI document (its Bearer scheme, /docs' Authorize button); the key is
# read by authenticate, so that a missing one is refused in dmrelay's words.
BEARER = HTTPBearer(
    auto_error=False, scheme_name="bearer", description="An API key: dmrelay keys create"
)


async def _scope(
    request: Request,
    session: Session,
    _: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)],
    profile_group_id: Annotated[
        str | None, Query(description="Confine the request to one profile group")
    ] = None,
) -> Scope:
    cache: PrincipalCache = request.app.state.principals
    scope = await authenticate(cache, session, request.headers.get("authorization", ""))
    group = scope.profile_group_id
    if profile_group_id is not None:
        requested = ids.decode(ids.Kind.PROFILE_GROUP, profile_group_id)
        if requested is None or (group is not None and requested != group):
            raise NotFound("Profile group")
        group = requested
    return Scope(
        api_key_id=scope.api_key_id, profile_group_id=group, account_wide=scope.account_wide
    )


CurrentScope = Annotated[Scope, Depends(_scope, scope="function")]
