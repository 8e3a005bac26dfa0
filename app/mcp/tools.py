"""dmrelay's MCP tools, with Postproxy's MCP names and inputs, for AI agents.

Each tool is a thin call to the service functions the REST routes call, with the request
schemas they validate with: the same rules (sizes, media, the 24-hour window, the key's
profile group), refused in the same sentences. A tool call is one unit of work
(`app/core/db.py:session_scope`: committed, then its jobs queued). A refusal is the tool's
error result, its text the `error` sentence the API would answer with.

The key: over HTTP (/mcp), the caller's `Authorization: Bearer` header, on every call; over
stdio (`dmrelay mcp`), the one the process was started with.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal, TypeVar

from mcp.server.fastmcp import Context, FastMCP
from mcp.server.fastmcp.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import State

from app.actions import service as actions
from app.actions.schemas import MAX_EMOJI, ReactionIn
from app.api_keys.auth import Scope, authenticate
from app.chats import service as chats
from app.chats.schemas import ChatCreate, ChatOut
from app.comments import service as comments
from app.comments.schemas import PrivateReplyIn
from app.comments.service import PRIVATE_REPLY_DAYS
from app.core import ids
from app.core.db import session_scope
from app.core.errors import APIError, explain
from app.core.pagination import MAX_PAGE, MAX_PER_PAGE, Page, PageParams
from app.core.schemas import Timestamp
from app.media.outbound import attach_media
from app.messages import service as messages
from app.messages.schemas import (
    MAX_TEXT_BYTES,
    MAX_TEXT_CHARACTERS,
    DirectionName,
    MessageOut,
    MessageSend,
    RecipientMessageSend,
    StatusName,
)
from app.profiles.service import get_profile, list_profiles

Model = TypeVar("Model", bound=BaseModel)

READ = ToolAnnotations(readOnlyHint=True, openWorldHint=False)
# Finds or creates: calling it again changes nothing more.
FIND_OR_CREATE = ToolAnnotations(
    readOnlyHint=False, destructiveHint=False, idempotentHint=True, openWorldHint=False
)
# Messages a person on Instagram: every call is one more message.
SEND = ToolAnnotations(
    readOnlyHint=False, destructiveHint=False, idempotentHint=False, openWorldHint=True
)
# Tells Instagram (the customer sees it); doing it again leaves the same state.
ACT = ToolAnnotations(
    readOnlyHint=False, destructiveHint=False, idempotentHint=True, openWorldHint=True
)
# dmrelay's own bookkeeping: nothing goes to Instagram.
FILE = ToolAnnotations(
    readOnlyHint=False, destructiveHint=False, idempotentHint=True, openWorldHint=False
)
# Would overwrite what was sent.
OVERWRITE = ToolAnnotations(
    readOnlyHint=False, destructiveHint=True, idempotentHint=True, openWorldHint=True
)

TEXT_LIMIT = (
    f"at most {MAX_TEXT_CHARACTERS} characters and {MAX_TEXT_BYTES} UTF-8 bytes, "
    "not only whitespace"
)
WINDOW = (
    "Instagram accepts a reply only within 24 hours of the customer's last message (7 days "
    "with tag HUMAN_AGENT, for a human agent's reply); outside it the send is refused."
)
QUEUED = "The message is accepted as `pending` and sent by a worker; read it back for its status."

ProfileId = Annotated[str, Field(description="The profile's id (dm_chats_list needs one)")]
ChatId = Annotated[str, Field(description="The chat's id, or Meta's conversation id")]
MessageId = Annotated[str, Field(description="The message's id, or Meta's message id (mid)")]
Igsid = Annotated[
    str, Field(description="The customer's Instagram-scoped id (IGSID): digits, as Meta gives it")
]
PageNumber = Annotated[int, Field(ge=0, le=MAX_PAGE, description="Page number, from 0")]
PerPage = Annotated[int, Field(ge=1, le=MAX_PER_PAGE, description="Items per page")]
Body = Annotated[
    str | None,
    Field(
        description=f"The text: {TEXT_LIMIT}", json_schema_extra={"maxLength": MAX_TEXT_CHARACTERS}
    ),
]
Media = Annotated[
    list[str] | None,
    Field(
        description="One public http(s) URL (or base64 data: URI) of an image, video, audio "
        "file or PDF, checked as the API checks it; Instagram takes text and media as "
        "separate messages",
        json_schema_extra={"maxItems": 1},
    ),
]


def _given(**fields: Any) -> dict[str, Any]:
    # Only what the caller gave: a field left out is not a field set to null.
    return {name: value for name, value in fields.items() if value is not None}


def _validated(model: type[Model], fields: dict[str, Any]) -> Model:
    """The request schema's validation, refused in the API's sentence."""
    try:
        return model.model_validate(fields)
    except ValidationError as error:
        # Located as FastAPI locates a JSON body's fields.
        problems = [{**problem, "loc": ("body", *problem["loc"])} for problem in error.errors()]
        raise ToolError(explain(problems)[1]) from error


def _dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json")


class _Units:
    """Units of work for tool calls, under the caller's key."""

    def __init__(self, state: State, key: str | None) -> None:
        self.state = state
        self.key = key

    def _authorization(self, ctx: Context[Any, Any, Any]) -> str:
        if self.key is not None:
            return f"Bearer {self.key}"
        request = ctx.request_context.request
        return "" if request is None else str(request.headers.get("authorization", ""))

    @asynccontextmanager
    async def __call__(
        self, ctx: Context[Any, Any, Any]
    ) -> AsyncIterator[tuple[AsyncSession, Scope]]:
        state = self.state
        try:
            async with asynccontextmanager(session_scope)(
                state.sessionmaker, state.arq_pool
            ) as session:
                scope = await authenticate(state.principals, session, self._authorization(ctx))
                yield session, scope
        except APIError as error:
            raise ToolError(error.message) from error


def create_server(state: State, key: str | None = None) -> FastMCP:
    """The MCP server over the API's resources (`app.state`). With `key`, every call uses it
    (stdio); without, each call the key of its HTTP request."""
    server = FastMCP(
        "dmrelay",
        instructions="Instagram direct messages through dmrelay: list and read chats and "
        "messages, and send replies. " + WINDOW,
        stateless_http=True,
        json_response=True,
        streamable_http_path="/mcp",
        # The key is a header, not a cookie: a rebinding page cannot use it.
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    unit = _Units(state, key)

    @server.tool(
        name="dm_chats_list",
        annotations=READ,
        description="List a profile's Instagram chats, most recently active first, "
        f"{MAX_PER_PAGE} per page at most.",
    )
    async def dm_chats_list(
        ctx: Context[Any, Any, Any],
        profile_id: ProfileId,
        page: PageNumber = 0,
        per_page: PerPage = 20,
        before: Annotated[Timestamp | None, Field(description="Active before (ISO 8601)")] = None,
        after: Annotated[Timestamp | None, Field(description="Active after (ISO 8601)")] = None,
    ) -> dict[str, Any]:
        params = PageParams(page=page, per_page=per_page)
        async with unit(ctx) as (session, scope):
            profile = await get_profile(session, scope, profile_id)
            found, total = await chats.list_chats(session, profile, params, before, after)
            data = [ChatOut.of(chat) for chat in found]
        return _dump(Page.of(data, total, params))

    @server.tool(
        name="dm_chat_create",
        annotations=FIND_OR_CREATE,
        description="Find or create the chat between a profile and a customer, by the "
        "customer's IGSID. Names given overwrite stored ones (at most 255 characters).",
    )
    async def dm_chat_create(
        ctx: Context[Any, Any, Any],
        profile_id: ProfileId,
        participant_external_id: Igsid,
        participant_username: str | None = None,
        participant_name: str | None = None,
    ) -> dict[str, Any]:
        fields = _validated(
            ChatCreate,
            _given(
                participant_external_id=participant_external_id,
                participant_username=participant_username,
                participant_name=participant_name,
            ),
        )
        async with unit(ctx) as (session, scope):
            profile = await get_profile(session, scope, profile_id)
            chat, _ = await chats.find_or_create(session, profile, fields)
            return _dump(ChatOut.of(chat))

    @server.tool(
        name="dm_chat_get",
        annotations=READ,
        description="Get a chat: its customer, times, and whether a reply may be sent now "
        "(within_messaging_window).",
    )
    async def dm_chat_get(ctx: Context[Any, Any, Any], chat_id: ChatId) -> dict[str, Any]:
        async with unit(ctx) as (session, scope):
            chat, _ = await chats.find_chat(session, scope, chat_id)
            return _dump(ChatOut.of(chat))

    @server.tool(
        name="dm_messages_list",
        annotations=READ,
        description=f"List a chat's messages, newest first, {MAX_PER_PAGE} per page at most; "
        "filter by direction (inbound, outbound) or status.",
    )
    async def dm_messages_list(
        ctx: Context[Any, Any, Any],
        chat_id: ChatId,
        page: PageNumber = 0,
        per_page: PerPage = 20,
        direction: DirectionName | None = None,
        status: StatusName | None = None,
    ) -> dict[str, Any]:
        params = PageParams(page=page, per_page=per_page)
        async with unit(ctx) as (session, scope):
            chat, _ = await chats.find_chat(session, scope, chat_id)
            found, total = await messages.list_messages(session, chat, params, direction, status)
            data = [MessageOut.of(message) for message in found]
        return _dump(Page.of(data, total, params))

    @server.tool(
        name="dm_message_send",
        annotations=SEND,
        description="Send a message in a chat: a body or one media URL. " + WINDOW + " " + QUEUED,
    )
    async def dm_message_send(
        ctx: Context[Any, Any, Any],
        chat_id: ChatId,
        body: Body = None,
        media: Media = None,
        tag: Annotated[
            Literal["HUMAN_AGENT"] | None,
            Field(description="HUMAN_AGENT: a human's reply, up to 7 days after"),
        ] = None,
        reply_to_external_id: Annotated[
            str | None, Field(description="Meta's id (mid) of the message replied to")
        ] = None,
    ) -> dict[str, Any]:
        fields = _validated(
            MessageSend,
            _given(body=body, media=media, tag=tag, reply_to_external_id=reply_to_external_id),
        )
        try:
            # As the REST route does: the media's type told, and the file checked, now.
            await attach_media(unit.state.media, fields)
        except APIError as error:
            raise ToolError(error.message) from error
        async with unit(ctx) as (session, scope):
            message = await messages.send_in_session(session, scope, chat_id, fields)
            return _dump(MessageOut.of(message))

    @server.tool(
        name="dm_message_get",
        annotations=READ,
        description="Get a message: its status (pending, published, failed_waiting_for_retry, "
        "failed, received) and, if it failed, why.",
    )
    async def dm_message_get(ctx: Context[Any, Any, Any], message_id: MessageId) -> dict[str, Any]:
        async with unit(ctx) as (session, scope):
            return _dump(MessageOut.of(await messages.get_message(session, scope, message_id)))

    @server.tool(
        name="dm_message_edit",
        annotations=OVERWRITE,
        description="Edit a sent message. Instagram does not allow it: this always answers "
        "with Instagram's refusal (send a new message instead).",
    )
    async def dm_message_edit(
        ctx: Context[Any, Any, Any], message_id: MessageId, body: Body = None
    ) -> dict[str, Any]:
        async with unit(ctx) as (session, scope):
            await messages.edit(session, scope, message_id)

    @server.tool(
        name="send_dm",
        annotations=SEND,
        description="Send a text to an Instagram customer by their IGSID, in one call: the "
        "chat is found or created. profile_id is needed only when the key sees more than one "
        f"profile. The message: {TEXT_LIMIT}. " + WINDOW,
    )
    async def send_dm(
        ctx: Context[Any, Any, Any],
        recipient_id: Igsid,
        message: Annotated[
            str,
            Field(
                description=f"The text: {TEXT_LIMIT}",
                json_schema_extra={"maxLength": MAX_TEXT_CHARACTERS},
            ),
        ],
        profile_id: Annotated[
            str | None, Field(description="The profile to send from, if the key sees several")
        ] = None,
    ) -> dict[str, Any]:
        fields = _validated(RecipientMessageSend, {"recipient_id": recipient_id, "body": message})
        async with unit(ctx) as (session, scope):
            if profile_id is None:
                profiles = await list_profiles(session, scope)
                if not profiles:
                    raise APIError(422, "This API key sees no profile: connect one first")
                if len(profiles) > 1:
                    known = ", ".join(
                        f"{ids.encode(ids.Kind.PROFILE, p.id)} (@{p.username or p.platform_id})"
                        for p in profiles
                    )
                    raise APIError(
                        422,
                        f"This API key sees {len(profiles)} profiles: give profile_id, "
                        f"one of {known}",
                    )
                profile_id = ids.encode(ids.Kind.PROFILE, profiles[0].id)
            sent = await messages.send_to_recipient(session, scope, profile_id, fields)
            return {
                "message_id": ids.encode(ids.Kind.MESSAGE, sent.id),
                "recipient_id": recipient_id,
                "status": sent.status,
            }

    @server.tool(
        name="dm_message_react",
        annotations=ACT,
        description="React to a message as the account: reaction `love`, or one emoji (at "
        f"most {MAX_EMOJI} characters). Reacting again replaces the reaction. Sent to "
        "Instagram at once (never queued); refused outside the 24-hour window, or if the "
        "message has no Instagram id yet.",
    )
    async def dm_message_react(
        ctx: Context[Any, Any, Any],
        message_id: MessageId,
        reaction: Annotated[
            Literal["love"] | None, Field(description="love (Instagram's one named reaction)")
        ] = None,
        emoji: Annotated[str | None, Field(description="Any emoji, such as 😂")] = None,
    ) -> dict[str, Any]:
        fields = _validated(ReactionIn, _given(reaction=reaction, emoji=emoji))
        actor = actions.Actor.of(unit.state)
        async with unit(ctx) as (session, scope):
            message = await actions.react(
                session, actor, scope, message_id, fields.reaction, fields.emoji
            )
            return _dump(MessageOut.of(message))

    @server.tool(
        name="dm_message_unreact",
        annotations=ACT,
        description="Take the account's reaction to a message back. Sent to Instagram at once "
        "(never queued); refused outside the 24-hour window.",
    )
    async def dm_message_unreact(
        ctx: Context[Any, Any, Any], message_id: MessageId
    ) -> dict[str, Any]:
        actor = actions.Actor.of(unit.state)
        async with unit(ctx) as (session, scope):
            message = await actions.unreact(session, actor, scope, message_id)
            return _dump(MessageOut.of(message))

    @server.tool(
        name="dm_chat_archive",
        annotations=FILE,
        description="Archive a chat: dm_chats_list leaves it out until the customer writes "
        "again or it is unarchived. Instagram is not told.",
    )
    async def dm_chat_archive(ctx: Context[Any, Any, Any], chat_id: ChatId) -> dict[str, Any]:
        async with unit(ctx) as (session, scope):
            return _dump(ChatOut.of(await chats.set_archived(session, scope, chat_id, True)))

    @server.tool(
        name="dm_chat_unarchive",
        annotations=FILE,
        description="Bring an archived chat back into dm_chats_list. Instagram is not told.",
    )
    async def dm_chat_unarchive(ctx: Context[Any, Any, Any], chat_id: ChatId) -> dict[str, Any]:
        async with unit(ctx) as (session, scope):
            return _dump(ChatOut.of(await chats.set_archived(session, scope, chat_id, False)))

    @server.tool(
        name="dm_comment_private_reply",
        annotations=SEND,
        description="Answer a comment on the account's post with a direct message to its "
        f"author: once per comment, within {PRIVATE_REPLY_DAYS} days of the comment (the "
        f"24-hour window does not apply). The text: {TEXT_LIMIT}. Filed in the chat with the "
        "commenter. " + QUEUED,
    )
    async def dm_comment_private_reply(
        ctx: Context[Any, Any, Any],
        profile_id: Annotated[str, Field(description="The profile whose post was commented on")],
        post_id: Annotated[str, Field(description="Meta's id of the post (media)")],
        comment_id: Annotated[str, Field(description="Meta's id of the comment")],
        text: Annotated[
            str,
            Field(
                description=f"The text: {TEXT_LIMIT}",
                json_schema_extra={"maxLength": MAX_TEXT_CHARACTERS},
            ),
        ],
    ) -> dict[str, Any]:
        fields = _validated(PrivateReplyIn, {"text": text})
        async with unit(ctx) as (session, scope):
            message = await comments.private_reply(
                session, scope, profile_id, post_id, comment_id, fields
            )
            return _dump(MessageOut.of(message))

    return server
