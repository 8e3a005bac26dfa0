"""Meta's Graph endpoints as the sandbox serves them: the Send API (messages, templates, quick
replies, sender actions, private replies), the Attachment Upload API, /me, subscribed_apps, the
User Profile API and the messenger profile's ice breakers, answered as Meta documents them,
usage headers included.

Every path outside /_sandbox comes here (app.sandbox.app), so that any `/vNN.N/` prefix (or
none) works and unknown paths get Meta's own error.
"""

import asyncio
import hashlib
import hmac
import json
import random
import re
import time
from contextlib import suppress
from datetime import UTC, datetime
from typing import Any, TypedDict
from urllib.parse import parse_qsl

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from starlette.background import BackgroundTask
from starlette.datastructures import UploadFile

from app.sandbox import actions, comments, events, interactive, messenger_profile, oauth
from app.sandbox.errors import THROTTLE, TRANSIENT_ERRORS, GraphError, unsupported
from app.sandbox.events import JSONObject
from app.sandbox.faults import Faults
from app.sandbox.ratelimit import Bucket
from app.sandbox.state import Sandbox, SentRecord

GRAPH_PATH = re.compile(r"(?:v\d+\.\d+/)?(?P<node>[^/]+)(?:/(?P<edge>[^/]+))?/?")
PARAM_KEY = re.compile(r"[^\[\]]+")  # "message[attachment][type]" -> message, attachment, type
ATTACHMENT_TYPES = {"image", "audio", "video", "file", "MEDIA_SHARE", "like_heart", "template"}
UPLOAD_TYPES = {"image", "audio", "video", "file"}
UPLOAD_MAX_BYTES = {
    "image": 8 * 1024 * 1024,
    "audio": 25 * 1024 * 1024,
    "video": 25 * 1024 * 1024,
    "file": 25 * 1024 * 1024,
}
SENDER_ACTIONS = {"react", "unreact", "typing_on", "typing_off", "mark_seen"}
# A call's parameters, query and body merged: JSON values, nested as Graph reads them.
Params = dict[str, Any]


class Me(TypedDict):
    user_id: str
    username: str
    id: str


async def graph_call(path: str, request: Request, sandbox: Sandbox) -> Response:
    match = GRAPH_PATH.fullmatch(path)
    node, edge = (match["node"], match["edge"]) if match else (path, None)
    account = node  # whose usage the headers report: the path id, or the token's for node reads
    try:
        if sandbox.faults.latency_ms:
            await asyncio.sleep(sandbox.faults.latency_ms / 1000)
        params = await read_params(request)
        if node == "oauth":  # Instagram Login's authorize page and code exchange: no token
            return oauth_call(request.method, edge, params, sandbox)
        token = check_token(access_token(request, params), sandbox.faults)
        if node not in TOKEN_EXCHANGES:
            check_proof(params, token, sandbox)
        if edge is None:
            account = owner(sandbox, "me", token)
        if random.random() < sandbox.faults.transient_rate:
            raise GraphError.transient(*random.choice(TRANSIENT_ERRORS))
        response = await dispatch(request, sandbox, node, edge, params, token)
    except GraphError as exc:
        response = exc.response()
    response.headers.update(sandbox.limiter.headers(account))
    return response


async def dispatch(
    request: Request, sandbox: Sandbox, node: str, edge: str | None, params: Params, token: str
) -> Response:
    if request.method == "GET" and edge is None and node == "me":
        return JSONResponse(sandbox.oauth.me(token) or me(token))
    if request.method == "GET" and edge is None and node == "access_token":
        return oauth.long_lived(params, token, sandbox.oauth, sandbox.settings)
    if request.method == "GET" and edge is None and node == "refresh_access_token":
        return oauth.refresh(params, token, sandbox.oauth)
    conversations = sandbox.conversations
    if request.method == "GET" and edge == "conversations":
        url = f"{str(request.base_url).rstrip('/')}/{request.url.path.lstrip('/')}"
        return JSONResponse(conversations.list(owner(sandbox, node, token), params, url))
    if request.method == "GET" and edge is None and node in conversations.by_id:
        return JSONResponse(conversations.read_conversation(conversations.by_id[node]))
    if request.method == "GET" and edge is None and node in conversations.by_mid:
        return JSONResponse(conversations.read_message(node, params))
    if request.method == "GET" and edge is None and node.isdigit():
        base_url = str(request.base_url)
        return JSONResponse(sandbox.profiles.read(node, params.get("fields"), base_url))
    if edge == "subscribed_apps":
        return subscribed_apps(request.method, sandbox, owner(sandbox, node, token), params)
    if request.method == "POST" and edge == "messages":
        return await send(request, sandbox, node, params)
    if edge == "messenger_profile":
        return messenger_profile_call(request.method, sandbox, owner(sandbox, node, token), params)
    if request.method == "POST" and edge == "message_attachments":
        return upload(sandbox, owner(sandbox, node, token), params)
    raise unsupported(request.method, node)


def subscribed_apps(method: str, sandbox: Sandbox, account: str, params: Params) -> Response:
    """An account's (or Page's) webhook subscription for this app (meta doc §11.6; Meta's
    Page Subscribed Apps reference): POST subscribes it with `subscribed_fields`, GET lists
    it, DELETE unsubscribes it (recorded, for tests); POST and DELETE answer
    `{"success": true}`."""
    oauth = sandbox.oauth
    if method == "POST":
        oauth.subscribed[account] = str(params.get("subscribed_fields", ""))
        return JSONResponse({"success": True})
    if method == "DELETE":
        oauth.subscribed.pop(account, None)
        oauth.unsubscribed.append(account)
        return JSONResponse({"success": True})
    if method == "GET":
        fields = oauth.subscribed.get(account)
        data = (
            []
            if fields is None
            else [
                {
                    "id": sandbox.settings.instagram_app_id or "sandbox-app",
                    "name": "dmrelay",
                    "subscribed_fields": [f for f in fields.split(",") if f],
                }
            ]
        )
        return JSONResponse({"data": data})
    raise unsupported(method, "subscribed_apps")


def owner(sandbox: Sandbox, node: str, token: str) -> str:
    """The account a call acts as: the path's id, or the token's for /me."""
    return (sandbox.oauth.me(token) or me(token))["user_id"] if node == "me" else node


def upload(sandbox: Sandbox, account: str, params: Params) -> Response:
    """The Attachment Upload API (meta-graph-api.md §11.5): a file by URL or as `filedata`,
    kept for reuse by the account that uploaded it."""
    message = params.get("message")
    attachment = message.get("attachment") if isinstance(message, dict) else None
    kind = attachment.get("type") if isinstance(attachment, dict) else None
    if kind not in UPLOAD_TYPES:
        raise GraphError(
            100, "(#100) Param message[attachment][type] must be one of {image, audio, video, file}"
        )
    payload = attachment.get("payload") if isinstance(attachment, dict) else None
    url = payload.get("url") if isinstance(payload, dict) else None
    filedata = params.get("filedata")
    size = len(filedata) if isinstance(filedata, bytes) else None
    if not (isinstance(url, str) and url) and size is None:
        raise GraphError(
            100, "(#100) Upload a file as filedata or give message[attachment][payload][url]"
        )
    if url in sandbox.faults.unfetchable_media:
        raise GraphError(100, "(#100) Failed to fetch the file from the url", 2018008)
    if size is not None and size > UPLOAD_MAX_BYTES[kind]:
        raise GraphError(100, "(#100) Attachment size exceeds allowable limit", 2018109)
    reusable = payload.get("is_reusable") if isinstance(payload, dict) else None
    attachment_id = new_attachment_id(sandbox, account)
    sandbox.uploads.append(
        {
            "attachment_id": attachment_id,
            "account_id": account,
            "type": kind,
            "url": url if isinstance(url, str) else None,
            "size": size,
            "is_reusable": reusable in (True, "true"),
            "received_at": datetime.now(UTC).isoformat(),
        }
    )
    return JSONResponse({"attachment_id": attachment_id})


def new_attachment_id(sandbox: Sandbox, account: str) -> str:
    attachment_id = str(random.randrange(10**15, 10**16))  # Meta's samples are numeric
    sandbox.attachment_owners[attachment_id] = account
    return attachment_id


def check_attachment_ids(sandbox: Sandbox, account: str, message: JSONObject) -> None:
    """Only the account that uploaded an attachment may send it by id."""
    for attachment in attachments_of(message):
        payload = attachment.get("payload")
        attachment_id = payload.get("attachment_id") if isinstance(payload, dict) else None
        if (
            attachment_id is not None
            and sandbox.attachment_owners.get(str(attachment_id)) != account
        ):
            raise GraphError(
                100, "(#100) Possible invalid ID or you do not own the attachment.", 2018074
            )


def messenger_profile_call(method: str, sandbox: Sandbox, account: str, params: Params) -> Response:
    """Ice breakers (meta doc §11.3); other messenger profile fields are not served."""
    if method == "POST":
        sandbox.ice_breakers[account] = messenger_profile.parse(params)
        return JSONResponse({"success": True})
    if method == "GET":
        # In the format they were set in: locale entries, or the flat questions.
        return JSONResponse({"data": sandbox.ice_breakers.get(account, [])})
    if method == "DELETE":
        fields = params.get("fields")
        if not (isinstance(fields, list) and "ice_breakers" in fields):
            raise GraphError(100, "(#100) Param fields must name the fields to delete")
        sandbox.ice_breakers.pop(account, None)
        return JSONResponse({"success": True})
    raise unsupported(method, account)


async def send(request: Request, sandbox: Sandbox, account: str, params: Params) -> Response:
    recipient, comment = params.get("recipient"), None
    if isinstance(recipient, dict) and "comment_id" in recipient:  # a private reply (§2.9)
        comment = comments.private_reply_recipient(
            sandbox.comments, account, recipient["comment_id"], params
        )
        params = {**params, "recipient": {"id": comment["from_id"]}}
    recipient_id = check_send(params)
    if isinstance(params.get("message"), dict):
        check_attachment_ids(sandbox, account, params["message"])
    fault = sandbox.faults.recipients.get(recipient_id)
    if fault:
        raise GraphError(fault.code, fault.message, fault.error_subcode)
    if not sandbox.limiter.take(account, rate_bucket(params)):
        raise GraphError.transient(*THROTTLE)
    if params.get("sender_action") is not None:  # as at Meta: answered, never echoed
        actions.check_and_record(sandbox, account, recipient_id, params["sender_action"], params)
        return JSONResponse({"recipient_id": recipient_id})

    mid, timed_out = events.new_mid(), sandbox.times_out(recipient_id)
    record: SentRecord = {
        "message_id": mid,
        "recipient_id": recipient_id,
        "account_id": account,
        "message": params["message"],
        "received_at": datetime.now(UTC).isoformat(),
        "timed_out": timed_out,
        "answered_at": None,
    }
    if "messaging_type" in params:
        record["messaging_type"] = params["messaging_type"]
    if "tag" in params:
        record["tag"] = params["tag"]
    if "reply_to" in params:
        record["reply_to"] = params["reply_to"]
    sandbox.sent.append(record)
    sandbox.threads[mid] = (account, recipient_id)
    if comment is not None:
        comment["replied"] = True
        record["comment_id"] = str(recipient["comment_id"])  # type: ignore[index]

    answer = {"recipient_id": recipient_id, "message_id": mid}
    if (reusable := reusable_upload(params["message"])) is not None:
        # Upload and send in one call (§2.4): the answer carries the attachment id too.
        answer["attachment_id"] = new_attachment_id(sandbox, account)
        sandbox.uploads.append(
            {
                "attachment_id": answer["attachment_id"],
                "account_id": account,
                "type": reusable["type"],
                "url": reusable["payload"]["url"],
                "size": None,
                "is_reusable": True,
                "received_at": datetime.now(UTC).isoformat(),
            }
        )
    content = events.echo_message(mid, params["message"])
    item = events.messaging_item(account, recipient_id, sandbox.timestamp(), "message", content)
    echo = events.bodies([(account, item)], "single", "messaging")[0]
    echo_first = sandbox.faults.echo.mode == "before"
    if timed_out or echo_first:
        await sandbox.echo(echo)
    if timed_out:
        await until_disconnected(request)  # the client gave up: nobody reads what follows
        return JSONResponse(answer)
    record["answered_at"] = datetime.now(UTC).isoformat()
    # A background task runs once the answer is sent; it only spawns, so it never holds that up.
    background = None if echo_first else BackgroundTask(sandbox.echo, echo)
    return JSONResponse(answer, background=background)


async def until_disconnected(request: Request) -> None:
    # The body has been read, so the next ASGI message is the client hanging up.
    while (await request.receive())["type"] != "http.disconnect":
        pass


def oauth_call(method: str, edge: str | None, params: Params, sandbox: Sandbox) -> Response:
    if method == "GET" and edge == "authorize":
        return oauth.authorize(params, sandbox.oauth, sandbox.settings)
    if method == "POST" and edge == "access_token":
        return oauth.exchange_code(params, sandbox.oauth, sandbox.settings)
    raise unsupported(method, "oauth")


def parse_params(pairs: list[tuple[str, str]]) -> Params:
    """Form/query pairs as Graph reads them: JSON-string values and bracket keys both nest."""
    params: Params = {}
    for key, text in pairs:
        *parents, leaf = PARAM_KEY.findall(key) or [key]
        node = params
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise GraphError(100, f"(#100) Invalid parameter {key}")
        value: object = text
        if text.startswith(("{", "[")):
            with suppress(ValueError):
                value = json.loads(text)
        node[leaf] = value
    return params


async def read_params(request: Request) -> Params:
    params = parse_params(parse_qsl(request.scope["query_string"].decode("latin-1")))
    body = await request.body()
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        # An upload's `filedata` part, beside form fields holding JSON strings.
        form = await request.form()
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                params[key] = await value.read()
            else:
                params.update(parse_params([(key, value)]))
        await form.close()
    elif "json" in content_type:
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise GraphError(100, "(#100) The request body could not be parsed as JSON")
        params.update(data)
    else:
        params.update(parse_params(parse_qsl(body.decode(errors="replace"))))
    return params


def access_token(request: Request, params: Params) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() in ("bearer", "oauth") and token.strip():
        return token.strip()
    given = params.get("access_token")
    return given if isinstance(given, str) and given else None


def check_token(token: str | None, faults: Faults) -> str:
    """The token, if Graph would take it; else Graph's error for it."""
    if token is None:
        raise GraphError(190, "Invalid OAuth access token - Cannot parse access token")
    if token in faults.revoked_tokens:
        raise GraphError(
            190,
            "Error validating access token: The session has been invalidated because the user "
            "changed their password or Facebook has changed the session for security reasons.",
            460,
        )
    if token in faults.malformed_tokens:
        # As Meta answers a token it cannot parse: quoting it.
        raise GraphError(190, f"Malformed access token {token}")
    return token


# Authenticated by client_secret, never by appsecret_proof (meta doc §8).
TOKEN_EXCHANGES = ("access_token", "refresh_access_token")
PROOF_SECONDS = 300  # a timestamped proof's life (meta doc §8)


def check_proof(params: Params, token: str, sandbox: Sandbox) -> None:
    """appsecret_proof (meta doc §8), checked when given, and required when told to."""
    proof, at = params.get("appsecret_proof"), params.get("appsecret_time")
    sandbox.proofs.append(proof is not None)
    if proof is None:
        if sandbox.faults.require_appsecret_proof:
            raise GraphError(
                100, "appsecret_proof argument must be set", error_type="GraphMethodException"
            )
        return
    message = token
    if at is not None:
        if not str(at).isdigit() or abs(time.time() - int(at)) > PROOF_SECONDS:
            raise GraphError(
                100,
                "(#100) appsecret_time is invalid or expired",
                error_type="GraphMethodException",
            )
        message = f"{token}|{at}"
    settings = sandbox.settings
    # A token the sandbox's Instagram Login issued is proved with the Instagram app's secret;
    # any other may be either kind (the sandbox serves both hosts).
    secrets_ = [settings.instagram_app_secret]
    if token not in sandbox.oauth.tokens:
        secrets_.append(settings.meta_app_secret)
    expected = [
        hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()
        for secret in secrets_
        if secret
    ]
    if not any(hmac.compare_digest(str(proof), e) for e in expected):
        raise GraphError(
            100,
            "Invalid appsecret_proof provided in the API argument",
            error_type="GraphMethodException",
        )


def check_send(params: Params) -> str:
    """Validate a /messages body in Meta's order; returns the recipient IGSID."""
    recipient = params.get("recipient")
    recipient_id = recipient.get("id") if isinstance(recipient, dict) else None
    if not (isinstance(recipient_id, str | int) and str(recipient_id).isdigit()):
        raise GraphError(100, "(#100) No matching Instagram user", 2534014)

    message, action = params.get("message"), params.get("sender_action")
    text = message.get("text") if isinstance(message, dict) else None
    if text is not None and not (isinstance(text, str) and len(text.encode()) <= 1000):
        raise GraphError(
            100, "(#100) Param message[text] must be UTF-8 text of at most 1000 bytes", 2534015
        )
    if (message is None) == (action is None):
        raise GraphError(100, "(#100) Exactly one of message or sender_action must be set")
    if action is not None and action not in SENDER_ACTIONS:
        raise GraphError(100, f"(#100) Param sender_action must be one of {sorted(SENDER_ACTIONS)}")
    if message is not None:
        check_message(message)

    tag, messaging_type = params.get("tag"), params.get("messaging_type")
    if not (
        (tag is None and messaging_type in (None, "RESPONSE", "UPDATE"))
        or (tag == "HUMAN_AGENT" and messaging_type == "MESSAGE_TAG")
    ):
        raise GraphError(
            100, "(#100) Param tag must be HUMAN_AGENT, sent with messaging_type MESSAGE_TAG"
        )
    return str(recipient_id)


def attachments_of(message: JSONObject) -> list[Any]:
    return [message["attachment"]] if "attachment" in message else message.get("attachments") or []


def check_message(message: object) -> None:
    if not isinstance(message, dict):
        raise GraphError(100, "(#100) Param message must be a JSON object", 2534015)
    attachments = attachments_of(message)
    if not message.get("text") and not attachments:
        raise GraphError(
            100, "(#100) Message cannot be empty, must provide valid attachment or text", 2534015
        )
    for attachment in attachments:
        if not (isinstance(attachment, dict) and attachment.get("type") in ATTACHMENT_TYPES):
            raise GraphError(
                100,
                "(#100) Param message[attachment][type] must be one of "
                "{image, audio, video, file, MEDIA_SHARE, like_heart, template}",
            )
        if attachment["type"] == "template":
            interactive.template(attachment.get("payload"))
    interactive.quick_replies(message)


def reusable_upload(message: JSONObject) -> JSONObject | None:
    """The attachment a send uploads for reuse (`is_reusable` beside its URL), if any."""
    attachment = message.get("attachment")
    payload = attachment.get("payload") if isinstance(attachment, dict) else None
    if (
        isinstance(payload, dict)
        and payload.get("url")
        and payload.get("is_reusable")
        in (
            True,
            "true",
        )
    ):
        return attachment
    return None


def rate_bucket(params: Params) -> Bucket:
    """The RateLimit budget a valid send draws on: audio and video have their own (§4.1)."""
    message = params.get("message")
    types = {a["type"] for a in attachments_of(message)} if isinstance(message, dict) else set()
    return "audio_video_per_second" if types & {"audio", "video"} else "per_second"


def me(token: str) -> Me:
    # Stable fake ids per token, so different tokens look like different accounts.
    digest = int(hashlib.sha256(token.encode()).hexdigest(), 16)
    return {
        "user_id": f"1784{digest % 10**13:013d}",
        "username": "sandbox_user",
        "id": f"{(digest >> 64) % 10**16:016d}",
    }
