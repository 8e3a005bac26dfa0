"""Connecting an Instagram account with Instagram Login (meta doc §11.6).

`initialize` answers the URL of Instagram's authorize page, with a signed, expiring state
(app/connections/state.py) naming the profile group and where the browser goes next.
`complete` is the callback: it checks the state, exchanges the code for a short-lived then a
long-lived token, reads the account (/me), subscribes it to the webhook fields dmrelay applies,
and only then writes: the profile, created or reconnected, and `profile.connected`. Anything
refused on the way (the state, the user, Meta) changes nothing and says why.
"""

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.api_keys.auth import Scope
from app.chat_syncs import service as chat_syncs
from app.connections import state as states
from app.connections.schemas import ConnectionInit
from app.core import crypto
from app.core.errors import Unprocessable
from app.core.settings import Settings
from app.events import service as events
from app.events.models import CustomerEventType
from app.messages import service as messages
from app.meta.errors import GraphError
from app.meta.graph import Account, GraphClient, GraphUnreachable, InstagramLogin
from app.profiles import repository as profiles_repository
from app.profiles import service as profiles
from app.profiles.models import Connection, Profile, ProfileGroup, ProfileStatus

log = logging.getLogger(__name__)
# Meta refreshes a long-lived token only once it is at least 24 hours old.
REFRESHABLE_AFTER_SECONDS = 86_400


class Refused(Exception):
    """The callback could not connect the account: a sentence why, and where the browser
    goes (None when the state cannot be trusted to say)."""

    def __init__(self, reason: str, redirect_url: str | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.redirect_url = redirect_url


@dataclass(frozen=True)
class Connected:
    profile: Profile
    redirect_url: str | None


def _configured(settings: Settings) -> str:
    missing = [
        name
        for name, value in (
            ("INSTAGRAM_APP_ID", settings.instagram_app_id),
            ("INSTAGRAM_APP_SECRET", settings.instagram_app_secret),
            ("INSTAGRAM_REDIRECT_URI", settings.instagram_redirect_uri),
            ("SECRET_KEY", settings.secret_key),
        )
        if not value
    ]
    if missing or settings.secret_key is None:
        raise Unprocessable(
            "Instagram Login is not configured on this dmrelay: set " + ", ".join(missing)
        )
    return settings.secret_key


async def initialize(
    session: AsyncSession,
    scope: Scope,
    settings: Settings,
    graph: GraphClient,
    group_public_id: str,
    fields: ConnectionInit,
) -> str:
    """The authorize page's URL, for an account to join this group."""
    group, _ = await profiles.get_group(session, scope, group_public_id)
    secret_key = _configured(settings)
    signed = states.sign(
        secret_key,
        states.ConnectState(group.id, fields.redirect_url),
        settings.connect_state_seconds,
    )
    return InstagramLogin(graph, settings).authorize_url(signed)


async def complete(
    session: AsyncSession, settings: Settings, graph: GraphClient, params: dict[str, str]
) -> Connected:
    try:
        state = states.verify(_configured(settings), params.get("state"))
    except states.BadState as error:
        raise Refused(f"The account was not connected: {error}.", None) from error
    except Unprocessable as error:
        raise Refused(error.message, None) from error
    back = state.redirect_url
    if "error" in params or not params.get("code"):
        said = params.get("error_description") or params.get("error") or "no code was given"
        raise Refused(f"The account was not connected: Instagram said: {said}", back)
    group = await session.get(ProfileGroup, state.profile_group_id)
    if group is None:
        raise Refused("The account was not connected: its profile group was deleted.", back)

    login = InstagramLogin(graph, settings)
    try:
        short_lived = await login.exchange_code(params["code"])
        issued = await login.long_lived(short_lived)
        proof = settings.instagram_login_appsecret_proof
        account = Account(Connection.INSTAGRAM_LOGIN, "me", None, issued.access_token, proof)
        me = await graph.get_me(account)
        platform_id = str(me["user_id"])
        if await profiles_repository.being_erased(session, "instagram", platform_id):
            raise Refused(
                f"The account was not connected: Instagram account {platform_id} is being "
                "erased; try again in a minute.",
                back,
            )
        elsewhere = await profiles_repository.group_name_of(session, "instagram", platform_id)
        if elsewhere is not None and elsewhere != group.name:
            raise Refused(
                f"The account was not connected: Instagram account {platform_id} belongs to "
                f"another profile group ('{elsewhere}'); erase it there first.",
                back,
            )
        await graph.subscribe(account)
    except (GraphError, GraphUnreachable) as error:
        said = error.message if isinstance(error, GraphError) else error.detail
        raise Refused(f"The account was not connected: Meta refused: {said}", back) from error

    profile = await connect_profile(
        session,
        settings,
        platform_id=platform_id,
        access_token=issued.access_token,
        connection=Connection.INSTAGRAM_LOGIN,
        group=group,
        username=_text(me.get("username")),
        name=_text(me.get("name")),
        extra=token_columns(issued.expires_in)
        | {"avatar_url": _text(me.get("profile_picture_url")), "appsecret_proof": proof},
    )
    await chat_syncs.start_after_connect(session, profile)
    return Connected(profile, back)


async def connect_profile(session: AsyncSession, settings: Settings, **fields: Any) -> Profile:
    """Connect an account, or reconnect it (the callback's and `dmrelay profiles add`'s one
    way): the profile written active with its new token (`profiles.add_profile`),
    profile.connected recorded, and the sends held while it was expired released at once
    (`messages.release_held`), not left to wait out EXPIRED_HOLD_SECONDS."""
    profile = await profiles.add_profile(session, settings, **fields)
    events.record_profile(session, CustomerEventType.PROFILE_CONNECTED, profile)
    await messages.release_held(session, profile.id)
    return profile


async def unsubscribe(graph: GraphClient, settings: Settings, profile: Profile) -> bool:
    """Ask Meta to stop sending the account's webhooks to this app; False if it is worth
    asking again (Meta unreachable, or a transient error). A refusal is not: the token may
    be dead, and Meta's webhooks for an inactive profile are ignored anyway."""
    try:
        await graph.unsubscribe(profiles.graph_account(profile, settings))
    except GraphUnreachable as error:
        log.warning("profile %s: unsubscribing could not reach Meta (%s)", profile.id, error.detail)
        return False
    except GraphError as error:
        if error.retryable:
            log.warning("profile %s: unsubscribing failed for now: %s", profile.id, error.message)
            return False
        log.warning(
            "profile %s: Meta refused to unsubscribe it (%s); its webhooks, if Meta still "
            "sends them, are ignored",
            profile.id,
            error.message,
        )
        return True
    log.info("profile %s: Meta no longer sends its webhooks to this app", profile.id)
    return True


async def unsubscribe_disconnected(
    sessions: async_sessionmaker[AsyncSession],
    graph: GraphClient,
    settings: Settings,
    profile_id: int,
) -> bool:
    """Unsubscribe a disconnected profile (one reconnected meanwhile, or gone, is left
    alone: nothing to do); False if it is worth asking again."""
    async with sessions() as session:
        profile = await session.get(Profile, profile_id)
    if profile is None or profile.status != ProfileStatus.INACTIVE:
        return True
    return await unsubscribe(graph, settings, profile)


def token_columns(expires_in: int | None) -> dict[str, Any]:
    """A profile's columns for a token Meta just issued."""
    now = datetime.now(UTC)
    expires_at = None if expires_in is None else now + timedelta(seconds=expires_in)
    return {"token_issued_at": now, "expires_at": expires_at}


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


async def refresh_tokens(
    sessions: async_sessionmaker[AsyncSession], graph: GraphClient, settings: Settings
) -> int:
    """Refresh the Instagram Login tokens that are due (at least 24 hours old, as Meta
    requires, and within TOKEN_REFRESH_BEFORE_SECONDS of expiring); how many were refreshed.
    A refusal marks the profile expired (and says so: profile.disconnected); a failure to
    reach Meta is tried again on the next run."""
    now = datetime.now(UTC)
    async with sessions() as session:
        due = await profiles_repository.due_for_refresh(
            session,
            issued_before=now - timedelta(seconds=REFRESHABLE_AFTER_SECONDS),
            expiring_before=now + timedelta(seconds=settings.token_refresh_before_seconds),
        )
    refreshed = 0
    for profile_id in due:
        async with sessions() as session, session.begin():
            refreshed += await _refresh(session, graph, settings, profile_id)
    return refreshed


async def _refresh(
    session: AsyncSession, graph: GraphClient, settings: Settings, profile_id: int
) -> bool:
    profile = await session.get(Profile, profile_id)
    if profile is None or profile.status != ProfileStatus.ACTIVE:
        return False
    token = profiles.access_token(profile.access_token_encrypted, settings)
    try:
        issued = await InstagramLogin(graph, settings).refresh(token)
        account = Account(
            Connection.INSTAGRAM_LOGIN,
            profile.platform_id,
            None,
            issued.access_token,
            profile.appsecret_proof,
        )
        me = await graph.get_me(account)
    except GraphUnreachable as error:
        log.warning("profile %s: token refresh could not reach Meta (%s)", profile_id, error.detail)
        return False
    except GraphError as error:
        if error.retryable:
            log.warning("profile %s: token refresh failed for now: %s", profile_id, error.message)
            return False
        log.warning(
            "profile %s: Meta refused its token refresh, so it is expired: %s",
            profile_id,
            error.message,
        )
        await profiles_repository.expire(session, profile_id, profile.access_token_encrypted)
        return False
    values = token_columns(issued.expires_in) | {
        "access_token_encrypted": crypto.encrypt(settings.secret_key, issued.access_token),
        "username": _text(me.get("username")) or profile.username,
        "name": _text(me.get("name")) or profile.name,
        "avatar_url": _text(me.get("profile_picture_url")),
    }
    # Only over the token it refreshed: a reconnect meanwhile brought a newer one.
    return await profiles_repository.replace_token(
        session, profile_id, profile.access_token_encrypted, values
    )
