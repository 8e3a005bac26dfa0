"""The MCP tools, through the official SDK's client: over streamable HTTP at /mcp, and over
stdio against `python -m app.cli mcp`."""

import asyncio
import os
import sys
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from sqlalchemy import select, update

from app.chats.models import Chat
from app.comments.models import Comment
from app.sandbox.media import FORMATS
from tests.conftest import CDN_URL, connect, wait_for
from tests.inbound import customer_writes

ROOT = Path(__file__).parent.parent
CUSTOMER = "1602510301006188"

TOOLS = {
    "dm_chats_list",
    "dm_chat_create",
    "dm_chat_get",
    "dm_messages_list",
    "dm_message_send",
    "dm_message_get",
    "dm_message_edit",
    "send_dm",
    "dm_message_react",
    "dm_message_unreact",
    "dm_chat_archive",
    "dm_chat_unarchive",
    "dm_comment_private_reply",
}
READ_ONLY = {"dm_chats_list", "dm_chat_get", "dm_messages_list", "dm_message_get"}


@asynccontextmanager
async def _http_session(stack, token: str):
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx.AsyncClient(headers=headers, timeout=30) as http,
        streamable_http_client(f"{stack.api_url}/mcp", http_client=http) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


async def _call(session: ClientSession, name: str, **arguments):
    result = await session.call_tool(name, arguments)
    assert not result.isError, result.content
    return result.structuredContent


async def _refusal(session: ClientSession, name: str, **arguments) -> str:
    result = await session.call_tool(name, arguments)
    assert result.isError, result
    [content] = result.content
    return content.text


async def test_tools_are_listed_with_annotations_and_limits(account, clean):
    async with _http_session(clean, account.token) as session:
        tools = {tool.name: tool for tool in (await session.list_tools()).tools}
    assert set(tools) == TOOLS
    for name, tool in tools.items():
        assert tool.description, name
        assert tool.annotations.readOnlyHint is (name in READ_ONLY), name
        assert "ctx" not in tool.inputSchema["properties"]
    assert tools["dm_message_send"].annotations.idempotentHint is False
    assert tools["dm_chat_create"].annotations.idempotentHint is True
    assert tools["dm_message_edit"].annotations.destructiveHint is True
    send_dm = tools["send_dm"].inputSchema
    assert send_dm["required"] == ["recipient_id", "message"]
    assert send_dm["properties"]["message"]["maxLength"] == 1000
    assert "1000 characters" in tools["send_dm"].description
    assert "24 hours" in tools["dm_message_send"].description
    assert tools["dm_messages_list"].inputSchema["properties"]["per_page"]["maximum"] == 100
    for name in ("dm_message_react", "dm_message_unreact"):
        assert tools[name].annotations.idempotentHint is True, name
        assert tools[name].annotations.openWorldHint is True, name
    for name in ("dm_chat_archive", "dm_chat_unarchive"):
        assert tools[name].annotations.idempotentHint is True, name
        assert tools[name].annotations.openWorldHint is False, name
    private_reply = tools["dm_comment_private_reply"]
    assert private_reply.annotations.idempotentHint is False
    assert private_reply.annotations.openWorldHint is True
    assert "once per comment" in private_reply.description
    assert "7 days" in private_reply.description


async def test_http_tools_create_send_read_and_refuse_as_the_api_does(account, clean):
    async with _http_session(clean, account.token) as session:
        chat = await _call(
            session,
            "dm_chat_create",
            profile_id=account.profile_id,
            participant_external_id=CUSTOMER,
            participant_username="customer",
        )
        assert chat["participant_external_id"] == CUSTOMER
        assert chat["participant_username"] == "customer"
        assert (await _call(session, "dm_chat_get", chat_id=chat["id"]))["id"] == chat["id"]
        listed = await _call(session, "dm_chats_list", profile_id=account.profile_id)
        assert [c["id"] for c in listed["data"]] == [chat["id"]] and listed["total"] == 1

        sent = await _call(session, "dm_message_send", chat_id=chat["id"], body="Hi from MCP")
        assert sent["status"] == "pending"

        async def published():
            message = await _call(session, "dm_message_get", message_id=sent["id"])
            return message if message["status"] == "published" else None

        await wait_for(published)
        page = await _call(session, "dm_messages_list", chat_id=chat["id"], direction="outbound")
        assert [m["body"] for m in page["data"]] == ["Hi from MCP"]

        # The API's validation, in its words; nothing stored.
        text = await _refusal(session, "dm_message_send", chat_id=chat["id"], body="x" * 1001)
        assert "Instagram accepts at most 1000 characters" in text
        both = await _refusal(
            session, "dm_message_send", chat_id=chat["id"], body="a", media=["https://x.io/a.png"]
        )
        assert "separate messages" in both
        assert "Chat not found" in await _refusal(
            session, "dm_message_send", chat_id="nope", body="hi"
        )
        edit = await _refusal(session, "dm_message_edit", message_id=sent["id"], body="changed")
        assert "does not let a business edit" in edit
        assert "Message not found" in await _refusal(
            session, "dm_message_edit", message_id="nope", body="changed"
        )

        # The 24-hour window.
        async with clean.sessionmaker() as db, db.begin():
            await db.execute(
                update(Chat).values(last_inbound_at=datetime.now(UTC) - timedelta(days=2))
            )
        closed = await _refusal(session, "dm_message_send", chat_id=chat["id"], body="late")
        assert "24" in closed
        page = await _call(session, "dm_messages_list", chat_id=chat["id"])
        assert page["total"] == 1


async def test_send_dm_finds_or_creates_the_chat(account, clean):
    async with _http_session(clean, account.token) as session:
        sent = await _call(session, "send_dm", recipient_id=CUSTOMER, message="Order shipped")
        assert sent == {
            "message_id": sent["message_id"],
            "recipient_id": CUSTOMER,
            "status": "pending",
        }
        message = await _call(session, "dm_message_get", message_id=sent["message_id"])
        chat = await _call(session, "dm_chat_get", chat_id=message["chat_id"])
        assert chat["participant_external_id"] == CUSTOMER
        again = await _call(session, "send_dm", recipient_id=CUSTOMER, message="And delivered")
        second = await _call(session, "dm_message_get", message_id=again["message_id"])
        assert second["chat_id"] == message["chat_id"]
        assert "recipient_id" in await _refusal(session, "send_dm", recipient_id="x", message="hi")
        assert "1000" in await _refusal(
            session, "send_dm", recipient_id=CUSTOMER, message="é" * 600
        )


async def test_send_dm_needs_profile_id_when_the_key_sees_several(clean):
    first = await connect(clean, platform_id="17841400000000001", group="shop")
    second = await connect(clean, platform_id="17841400000000002", group="shop")
    try:
        async with _http_session(clean, second.token) as session:
            text = await _refusal(session, "send_dm", recipient_id=CUSTOMER, message="hi")
            assert "sees 2 profiles: give profile_id" in text
            assert first.profile_id in text and second.profile_id in text
            sent = await _call(
                session,
                "send_dm",
                recipient_id=CUSTOMER,
                message="hi",
                profile_id=second.profile_id,
            )
            message = await _call(session, "dm_message_get", message_id=sent["message_id"])
            chat = await _call(session, "dm_chat_get", chat_id=message["chat_id"])
            assert chat["profile_id"] == second.profile_id
    finally:
        await first.client.close()
        await second.client.close()


async def test_react_and_unreact_reach_instagram(account, clean):
    mid = await customer_writes(clean, account, CUSTOMER, "Hi")
    async with _http_session(clean, account.token) as session:

        async def arrived():
            result = await session.call_tool("dm_message_get", {"message_id": mid})
            return None if result.isError else result.structuredContent

        message = await wait_for(arrived)
        reacted = await _call(session, "dm_message_react", message_id=mid, reaction="love")
        assert [(r["reaction"], r["emoji"]) for r in reacted["reactions"]] == [
            ("love", "\u2764\ufe0f")
        ]
        reacted = await _call(session, "dm_message_react", message_id=mid, emoji="😂")
        assert [(r["reaction"], r["emoji"]) for r in reacted["reactions"]] == [(None, "😂")]
        unreacted = await _call(session, "dm_message_unreact", message_id=mid)
        assert unreacted["reactions"] == []
        # The API's validation and refusals, in its words.
        assert "give a reaction (love) or an emoji" in await _refusal(
            session, "dm_message_react", message_id=mid
        )
        assert "must be an emoji" in await _refusal(
            session, "dm_message_react", message_id=mid, emoji="ok"
        )
        assert "Message not found" in await _refusal(
            session, "dm_message_unreact", message_id="nope"
        )
    actions = (await clean.sandbox("GET", "/_sandbox/actions")).json()["data"]
    external_id = message["external_id"]
    assert [(a["sender_action"], a["recipient_id"], a.get("payload")) for a in actions] == [
        ("react", CUSTOMER, {"message_id": external_id, "reaction": "love"}),
        ("react", CUSTOMER, {"message_id": external_id, "reaction": "😂"}),
        ("unreact", CUSTOMER, {"message_id": external_id}),
    ]


async def test_archive_and_unarchive_a_chat(account, clean):
    async with _http_session(clean, account.token) as session:
        chat = await _call(
            session,
            "dm_chat_create",
            profile_id=account.profile_id,
            participant_external_id=CUSTOMER,
        )
        archived = await _call(session, "dm_chat_archive", chat_id=chat["id"])
        assert archived["archived"] is True
        assert (await _call(session, "dm_chat_archive", chat_id=chat["id"]))["archived"] is True
        listed = await _call(session, "dm_chats_list", profile_id=account.profile_id)
        assert listed["total"] == 0
        assert (await account.client.chats.get(chat["id"])).archived is True
        back = await _call(session, "dm_chat_unarchive", chat_id=chat["id"])
        assert back["archived"] is False
        listed = await _call(session, "dm_chats_list", profile_id=account.profile_id)
        assert [c["id"] for c in listed["data"]] == [chat["id"]]
        assert "Chat not found" in await _refusal(session, "dm_chat_archive", chat_id="nope")


async def test_private_reply_to_a_comment_is_published_once(account, clean):
    commenter = "1602510301007777"
    body = {"account_id": account.platform_id, "sender_id": commenter, "text": "LINK",
            "media_id": "17900000000000001"}  # fmt: skip
    comment_id = (await clean.sandbox("POST", "/_sandbox/comments", json=body)).json()["comment_id"]

    async def stored():
        async with clean.sessionmaker() as db:
            return await db.scalar(select(Comment).where(Comment.external_id == comment_id))

    await wait_for(stored)
    reply = {"profile_id": account.profile_id, "post_id": "17900000000000001",
             "comment_id": comment_id}  # fmt: skip
    async with _http_session(clean, account.token) as session:
        sent = await _call(session, "dm_comment_private_reply", **reply, text="Here is the link")
        assert sent["status"] == "pending"
        assert sent["external_comment_id"] == comment_id

        async def published():
            message = await _call(session, "dm_message_get", message_id=sent["id"])
            return message if message["status"] == "published" else None

        await wait_for(published)
        again = await _refusal(session, "dm_comment_private_reply", **reply, text="again")
        assert "already has its private reply" in again
        assert "Comment not found" in await _refusal(
            session, "dm_comment_private_reply", **{**reply, "comment_id": "1"}, text="hi"
        )
    [delivered] = (await clean.sandbox("GET", "/_sandbox/sent")).json()["data"]
    assert delivered["comment_id"] == comment_id
    assert delivered["recipient_id"] == commenter
    assert delivered["message"]["text"] == "Here is the link"


async def test_a_media_url_is_sent_with_its_attachment(account, clean):
    # Extension-less: only probing its content, as the REST route does, tells its type.
    await clean.sandbox("PUT", "/_sandbox/media/mcpclip", content=FORMATS[".mp4"][1],
                        headers={"content-type": "application/octet-stream"})  # fmt: skip
    url = f"{CDN_URL}/mcpclip"
    async with _http_session(clean, account.token) as session:
        chat = await _call(
            session,
            "dm_chat_create",
            profile_id=account.profile_id,
            participant_external_id=CUSTOMER,
        )
        sent = await _call(session, "dm_message_send", chat_id=chat["id"], media=[url])
        [pending] = sent["attachments"]
        assert (pending["type"], pending["url"], pending["status"]) == ("video", url, "pending")

        async def published():
            message = await _call(session, "dm_message_get", message_id=sent["id"])
            return message if message["status"] == "published" else None

        message = await wait_for(published)
        await clean.sandbox("POST", "/_sandbox/media/expire", json={"names": ["gone.png"]})
        refused = await _refusal(
            session, "dm_message_send", chat_id=chat["id"], media=[f"{CDN_URL}/gone.png"]
        )
        assert "HTTP 404" in refused
        assert (await _call(session, "dm_messages_list", chat_id=chat["id"]))["total"] == 1
    [upload] = (await clean.sandbox("GET", "/_sandbox/uploads")).json()["data"]
    [attachment] = message["attachments"]
    assert (attachment["status"], attachment["external_id"]) == (
        "processed",
        upload["attachment_id"],
    )
    [delivered] = (await clean.sandbox("GET", "/_sandbox/sent")).json()["data"]
    assert delivered["message"] == {
        "attachment": {"type": "video", "payload": {"attachment_id": upload["attachment_id"]}}
    }


async def test_tenant_rules_and_keys_over_http(account, clean):
    other = await connect(clean, platform_id="17841400000000009", group="other", key_group="other")
    try:
        chat = await account.client.chats.create(account.profile_id, CUSTOMER)
        async with _http_session(clean, other.token) as session:
            assert "Chat not found" in await _refusal(session, "dm_chat_get", chat_id=chat.id)
            assert "Profile not found" in await _refusal(
                session, "dm_chats_list", profile_id=account.profile_id
            )
    finally:
        await other.client.close()
    async with httpx.AsyncClient(base_url=clean.api_url) as http:
        initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}
        accept = {"Accept": "application/json, text/event-stream"}
        missing = await http.post("/mcp", json=initialize, headers=accept)
        wrong = await http.post(
            "/mcp", json=initialize, headers={**accept, "Authorization": "Bearer nope"}
        )
        key = {**accept, "Authorization": f"Bearer {account.token}"}
        stream = await http.get("/mcp", headers=key)
        end = await http.delete("/mcp", headers=key)
        json_key = {**key, "Content-Type": "application/json"}
        latin = await http.post("/mcp", content=b'{"a": "caf\xe9"}', headers=json_key)
        deep = await http.post("/mcp", content=b"[" * 5000, headers=json_key)
    # Bodies the MCP SDK cannot read: refused as the API refuses them.
    assert latin.status_code == deep.status_code == 400
    assert "it is not UTF-8 text" in latin.json()["error"]
    assert "nested too deeply" in deep.json()["error"]
    # Stateless: no stream to hold open, no session to end.
    for refused, method in ((stream, "GET"), (end, "DELETE")):
        assert refused.status_code == 405 and refused.headers["Allow"] == "POST"
        assert refused.json() == {
            "error": f"{method} is not allowed on /mcp; it takes POST.",
            "errors": [],
        }
    assert missing.status_code == wrong.status_code == 401
    assert missing.json()["error"].startswith("Missing API key")
    assert wrong.json() == {"error": "Invalid API key", "errors": []}
    assert missing.headers["WWW-Authenticate"] == "Bearer"


async def test_stdio_server_lists_and_calls_the_tools(account, clean):
    parameters = StdioServerParameters(
        command=sys.executable,
        args=["-m", "app.cli", "mcp"],
        env={**os.environ, "PYTHONPATH": str(ROOT), "DMRELAY_API_KEY": account.token},
        cwd=str(ROOT),
    )
    async with (
        stdio_client(parameters) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        tools = {tool.name for tool in (await session.list_tools()).tools}
        assert tools == TOOLS
        sent = await _call(session, "send_dm", recipient_id=CUSTOMER, message="Hi over stdio")
        assert sent["status"] == "pending"
        listed = await _call(session, "dm_chats_list", profile_id=account.profile_id)
        assert listed["total"] == 1
        assert "Chat not found" in await _refusal(session, "dm_chat_get", chat_id="nope")

    async def published():
        message = await account.client.messages.get(sent["message_id"])
        return message.status == "published"

    await wait_for(published)


async def test_stdio_server_without_a_key_says_so(clean):
    env = {k: v for k, v in os.environ.items() if k != "DMRELAY_API_KEY"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        "mcp",
        env={**env, "PYTHONPATH": str(ROOT)},
        cwd=str(ROOT),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await process.communicate()
    assert process.returncode != 0
    assert (
        stderr.decode().strip()
        == "dmrelay mcp: set DMRELAY_API_KEY to an API key (dmrelay keys create)"
    )
