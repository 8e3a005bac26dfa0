"""The OpenAPI document: complete enough that a generator makes a working client from it."""

import importlib
import json
import subprocess
import sys

import httpx

from app.core.idempotency import MAX_KEY_LENGTH
from tests.conftest import wait_for

CUSTOMER = "1602510301006188"

OPERATIONS = {
    ("get", "/api/profiles"): "profiles_list",
    ("get", "/api/profiles/{profile_id}"): "profiles_get",
    ("delete", "/api/profiles/{profile_id}"): "profiles_delete",
    ("get", "/api/profile_groups"): "profile_groups_list",
    ("post", "/api/profile_groups"): "profile_groups_create",
    ("get", "/api/profile_groups/{group_id}"): "profile_groups_get",
    ("delete", "/api/profile_groups/{group_id}"): "profile_groups_delete",
    (
        "post",
        "/api/profile_groups/{group_id}/initialize_connection",
    ): "profile_groups_initialize_connection",
    ("get", "/api/api_keys"): "api_keys_list",
    ("post", "/api/api_keys"): "api_keys_create",
    ("delete", "/api/api_keys/{key_id}"): "api_keys_delete",
    ("get", "/api/profiles/{profile_id}/chats"): "chats_list",
    ("post", "/api/profiles/{profile_id}/chats"): "chats_create",
    ("post", "/api/chats/{chat_id}/archive"): "chats_archive",
    ("delete", "/api/chats/{chat_id}/archive"): "chats_unarchive",
    ("get", "/api/chats/{chat_id}"): "chats_get",
    ("get", "/api/chats/{chat_id}/messages"): "messages_list",
    ("post", "/api/chats/{chat_id}/messages"): "messages_send",
    ("post", "/api/profiles/{profile_id}/messages"): "messages_send_to_recipient",
    ("post", "/api/messages/{message_id}/retry"): "messages_retry",
    ("get", "/api/messages/{message_id}"): "messages_get",
    ("patch", "/api/messages/{message_id}"): "messages_edit",
    ("get", "/api/profiles/{profile_id}/participants/{user_id}"): "participants_get",
    ("post", "/api/profiles/{profile_id}/backfill_chats"): "chat_syncs_backfill",
    ("get", "/api/profiles/{profile_id}/chat_syncs"): "chat_syncs_list",
    ("get", "/api/profiles/{profile_id}/chat_syncs/{chat_sync_id}"): "chat_syncs_get",
    ("get", "/api/webhooks"): "webhooks_list",
    ("post", "/api/webhooks"): "webhooks_create",
    ("get", "/api/webhooks/{webhook_id}"): "webhooks_get",
    ("patch", "/api/webhooks/{webhook_id}"): "webhooks_update",
    ("delete", "/api/webhooks/{webhook_id}"): "webhooks_delete",
    ("get", "/api/webhooks/{webhook_id}/deliveries"): "webhooks_deliveries",
    ("post", "/api/webhooks/{webhook_id}/test"): "webhooks_test",
    ("post", "/api/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver"): "webhooks_redeliver",
    ("post", "/api/messages/{message_id}/react"): "messages_react",
    ("delete", "/api/messages/{message_id}/unreact"): "messages_unreact",
    ("post", "/api/chats/{chat_id}/mark_read"): "chats_mark_read",
    ("post", "/api/chats/{chat_id}/start_typing"): "chats_start_typing",
    ("post", "/api/chats/{chat_id}/stop_typing"): "chats_stop_typing",
    ("get", "/api/profiles/{profile_id}/ice_breakers"): "ice_breakers_get",
    ("post", "/api/profiles/{profile_id}/ice_breakers"): "ice_breakers_set",
    ("delete", "/api/profiles/{profile_id}/ice_breakers"): "ice_breakers_delete",
    ("post", "/api/posts/{post_id}/comments/{comment_id}/private_reply"): "comments_private_reply",
    ("get", "/webhooks/instagram"): "webhooks_verify",
    ("post", "/webhooks/instagram"): "webhooks_receive",
    ("get", "/media/{key}"): "media_get",
}


async def _spec(stack) -> dict:
    async with httpx.AsyncClient(base_url=stack.api_url) as http:
        return (await http.get("/openapi.json")).json()


def _operations(spec: dict):
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            yield method, path, operation


async def test_every_route_is_documented_with_a_stable_operation_id(stack):
    spec = await _spec(stack)
    assert spec["openapi"].startswith("3.1")
    found = {(method, path): op["operationId"] for method, path, op in _operations(spec)}
    assert found == OPERATIONS
    assert len(set(found.values())) == len(found)  # unique: a generator names methods by them
    for method, path, operation in _operations(spec):
        assert operation["summary"], (method, path)


def test_every_operation_id_and_summary_is_declared_not_derived(settings):
    """FastAPI derives an id from the function and path, and a summary from the function's
    name: both change when the code is renamed, so every route states its own."""
    from fastapi.routing import APIRoute

    from app.main import create_app

    routes = [r for r in create_app(settings).routes if isinstance(r, APIRoute)]
    assert routes
    for route in routes:
        if route.include_in_schema:
            assert route.operation_id, route.path
            assert route.summary, route.path


async def test_every_error_is_documented_in_dmrelays_shape(stack):
    spec = await _spec(stack)
    schemas = spec["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert set(schemas["ErrorOut"]["properties"]) == {"error", "errors"}
    for method, path, operation in _operations(spec):
        responses = operation["responses"]
        errors = {status for status in responses if status[0] in "45"}
        assert errors, (method, path)
        assert "4XX" not in responses
        for status in errors:
            content = responses[status]["content"]
            assert content == {
                "application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}
            }, (method, path, status)
        if path.startswith("/api/"):
            assert operation["security"] == [{"bearer": []}]
            assert {"401", "404", "503"} <= errors, (method, path)
        if "requestBody" in operation and path.startswith("/api/"):
            assert {"400", "413", "415", "422"} <= errors, (method, path)
    assert spec["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key: dmrelay keys create",
    }
    participants = spec["paths"]["/api/profiles/{profile_id}/participants/{user_id}"]["get"]
    assert "502" in participants["responses"]
    assert "403" in spec["paths"]["/webhooks/instagram"]["get"]["responses"]


async def test_posts_document_the_idempotency_key_and_the_limits(stack):
    spec = await _spec(stack)
    for method, path, operation in _operations(spec):
        if method != "post" or not path.startswith("/api/"):
            continue
        [header] = [p for p in operation["parameters"] if p["name"] == "Idempotency-Key"]
        assert header["in"] == "header" and not header["required"]
        [string] = [s for s in header["schema"]["anyOf"] if s["type"] == "string"]
        assert (string["minLength"], string["maxLength"]) == (1, MAX_KEY_LENGTH)
        assert {"409", "422"} <= set(operation["responses"])
        assert (
            "Idempotent-Replayed" in operation["responses"][min(operation["responses"])]["headers"]
        )
    send = spec["components"]["schemas"]["MessageSend"]["properties"]
    assert send["body"]["maxLength"] == 1000 and send["body"]["examples"]
    assert send["media"]["maxItems"] == 1 and send["media"]["examples"]
    recipient = spec["components"]["schemas"]["RecipientMessageSend"]
    assert "recipient_id" in recipient["required"]
    chat = spec["components"]["schemas"]["ChatCreate"]["properties"]
    assert chat["participant_username"]["anyOf"][0]["maxLength"] == 255
    page = spec["paths"]["/api/chats/{chat_id}/messages"]["get"]["parameters"]
    [per_page] = [p for p in page if p["name"] == "per_page"]
    assert per_page["schema"]["maximum"] == 100
    media = spec["paths"]["/media/{key}"]["get"]["responses"]
    assert "image/*" in media["200"]["content"] and "404" in media


async def test_docs_page_has_the_authorize_button(stack):
    async with httpx.AsyncClient(base_url=stack.api_url) as http:
        docs = await http.get("/docs")
    assert docs.status_code == 200
    assert "swagger-ui" in docs.text and "/openapi.json" in docs.text


# The client generator's settings: no formatter run after it (ruff is a dev tool, not needed to
# import the code), and Instagram's media types read as files.
GENERATOR_CONFIG = {
    "post_hooks": [],
    "content_type_overrides": {
        media_type: "application/octet-stream"
        for media_type in ("image/*", "video/*", "audio/*", "application/pdf")
    },
}


async def test_a_generated_client_creates_a_chat_sends_and_reads_back(account, clean, tmp_path):
    spec = await _spec(clean)
    (tmp_path / "openapi.json").write_text(json.dumps(spec))
    (tmp_path / "config.json").write_text(json.dumps(GENERATOR_CONFIG))
    generated = subprocess.run(
        [
            sys.executable,
            "-m",
            "openapi_python_client",
            "generate",
            "--path",
            str(tmp_path / "openapi.json"),
            "--config",
            str(tmp_path / "config.json"),
            "--output-path",
            str(tmp_path / "dmrelay_client"),
            "--meta",
            "none",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert generated.returncode == 0, generated.stdout + generated.stderr
    assert "Warning" not in generated.stdout, generated.stdout

    sys.path.insert(0, str(tmp_path))
    try:
        client_module = importlib.import_module("dmrelay_client.client")
        chats_create = importlib.import_module("dmrelay_client.api.chats.chats_create")
        messages_send = importlib.import_module("dmrelay_client.api.messages.messages_send")
        messages_get = importlib.import_module("dmrelay_client.api.messages.messages_get")
        models = importlib.import_module("dmrelay_client.models")
    finally:
        sys.path.remove(str(tmp_path))

    client = client_module.AuthenticatedClient(base_url=clean.api_url, token=account.token)
    async with client:
        created = await chats_create.asyncio_detailed(
            account.profile_id,
            client=client,
            body=models.ChatCreate(participant_external_id=CUSTOMER),
        )
        assert created.status_code == 201
        chat = created.parsed
        assert isinstance(chat, models.ChatOut) and chat.participant_external_id == CUSTOMER

        sent = await messages_send.asyncio_detailed(
            chat.id, client=client, body=models.MessageSend(body="Hello from a generated client")
        )
        assert sent.status_code == 202
        assert isinstance(sent.parsed, models.MessageOut)
        assert sent.parsed.status == "pending"

        async def published():
            message = await messages_get.asyncio(sent.parsed.id, client=client)
            return message if message.status == "published" else None

        message = await wait_for(published)
        assert message.body == "Hello from a generated client"
        assert message.chat_id == chat.id

        # A refusal is parsed as dmrelay's error, with the field named.
        refused = await messages_send.asyncio_detailed(
            chat.id, client=client, body=models.MessageSend(body=" ")
        )
        assert refused.status_code == 422
        assert isinstance(refused.parsed, models.ErrorOut)
        assert [problem.field for problem in refused.parsed.errors] == ["body"]

    anonymous = client_module.Client(base_url=clean.api_url)
    async with anonymous:
        missing = await messages_get.asyncio_detailed(sent.parsed.id, client=anonymous)
    assert missing.status_code == 401 and isinstance(missing.parsed, models.ErrorOut)
