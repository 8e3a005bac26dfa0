"""The unauthenticated control surface, under /_sandbox:

GET|DELETE /sent                 what the Send API accepted (DELETE: actions, uploads too)
GET        /actions              the sender actions it took (react, typing, mark_seen, ...)
GET        /uploads              what the Attachment Upload API took
GET|POST   /faults               the fault set (shape: app.sandbox.faults)
POST       /inbound              {account_id, sender_id, text} -> {mid, timestamp}
POST       /comments             a comment on a post (app.sandbox.comments) -> {comment_id}
POST       /emit                 webhook events (shapes: app.sandbox.events) ->
                                 {mids, posts, statuses}
POST       /profiles             {"<IGSID>": {field: value}}: override, and grant consent
DELETE     /profiles             forget every profile, consent and request count
GET|DELETE /profile_requests     Graph profile reads per IGSID
GET        /media/{name}         bytes for attachment and profile picture URLs
PUT        /media/{name}         serve the body (with its Content-Type) at that name
POST       /media/expire         {"names": [...]}: those answer 404 from now on
GET|POST   /oauth                Instagram Login: who the authorize page approves as, or
                                 {"deny": true}; GET also lists token calls, subscriptions
                                 and unsubscriptions (DELETE subscribed_apps), in order
POST|DELETE /conversations       seed an account's conversations (shape: app.sandbox.conversations)
                                 -> {ids}; GET lists the Conversations API calls answered
GET|DELETE /proofs               whether each Graph call carried appsecret_proof
POST       /oauth/age            {"seconds": N}: every issued token N seconds older
"""

import random
import time
from functools import partial
from typing import Any

import httpx
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from app.sandbox import media
from app.sandbox.comments import NewComment
from app.sandbox.conversations import Seed
from app.sandbox.events import AnyEvent, Batch, Item, Shape, Text, bodies, item_key, opens_profile
from app.sandbox.faults import Faults
from app.sandbox.oauth import OAuthControl
from app.sandbox.profiles import ProfileFields
from app.sandbox.state import Sandbox, SandboxDep


class ControlError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


async def control_error(request: Request, exc: ControlError) -> JSONResponse:
    return JSONResponse({"error": exc.message}, status_code=exc.status)


class Inbound(BaseModel):
    account_id: str
    sender_id: str
    text: str


class Emit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[AnyEvent] = Field(min_length=1)
    batch: Batch = "single"
    duplicate: bool = False  # post every body twice
    shuffle: bool = False  # post the bodies in random order
    shape: Shape = "messaging"


class MediaNames(BaseModel):
    names: list[str]


def webhook_ready(sandbox: SandboxDep) -> Sandbox:
    if not sandbox.settings.sandbox_webhook_url:
        raise ControlError(409, "SANDBOX_WEBHOOK_URL is not set: the sandbox has nowhere to post")
    return sandbox


ReadyDep = Depends(webhook_ready)
control = APIRouter(prefix="/_sandbox")
# What the routes answer. FastAPI takes a route's return type as its response model: a plain
# JSON object keeps the answers and the OpenAPI schema as they are.
Answer = dict[str, Any]


@control.get("/sent")
async def list_sent(sandbox: SandboxDep) -> Answer:
    return {"data": sandbox.sent}


@control.delete("/sent")
async def clear_sent(sandbox: SandboxDep) -> Answer:
    sandbox.sent.clear()
    sandbox.actions.clear()
    sandbox.uploads.clear()
    return {"success": True}


@control.get("/actions")
async def list_actions(sandbox: SandboxDep) -> Answer:
    return {"data": sandbox.actions}


@control.get("/uploads")
async def list_uploads(sandbox: SandboxDep) -> Answer:
    return {"data": sandbox.uploads}


@control.get("/faults")
async def get_faults(sandbox: SandboxDep) -> Faults:
    return sandbox.faults


@control.post("/faults")
async def set_faults(faults: Faults, sandbox: SandboxDep) -> Faults:
    sandbox.set_faults(faults)
    return faults


async def emit_items(sandbox: Sandbox, emit: Emit, base_url: str) -> tuple[list[Item], list[int]]:
    """Post the events to dmrelay as asked; returns their items and the HTTP statuses."""
    new_media_url = partial(media.new_url, base_url)
    pairs: list[tuple[str, Item]] = []
    for event in emit.events:
        timestamp = sandbox.timestamp() if event.timestamp is None else event.timestamp
        item = event.item(timestamp, new_media_url)
        if opens_profile(item):  # before posting: dmrelay may read the profile at once
            sandbox.profiles.consent(event.sender_id)
        content = item[item_key(item)]
        if item_key(item) == "message" and isinstance(content.get("mid"), str):
            sandbox.threads[content["mid"]] = (event.account_id, event.sender_id)
        pairs.append((event.account_id, item))
    payloads = bodies(pairs, emit.batch, emit.shape)
    if emit.duplicate:
        payloads = [payload for payload in payloads for _ in range(2)]
    if emit.shuffle:
        random.shuffle(payloads)
    statuses = []
    for payload in payloads:
        try:
            statuses.append((await sandbox.post_webhook(payload)).status_code)
        except httpx.HTTPError as exc:
            raise ControlError(502, f"webhook delivery failed: {exc!r}") from exc
    return [item for _, item in pairs], statuses


@control.post("/emit")
async def emit(body: Emit, request: Request, sandbox: Sandbox = ReadyDep) -> Answer:
    items, statuses = await emit_items(sandbox, body, str(request.base_url))
    mids = [item[item_key(item)].get("mid") for item in items]
    return {"mids": mids, "posts": len(statuses), "statuses": statuses}


@control.post("/comments")
async def comment(body: NewComment, sandbox: Sandbox = ReadyDep) -> Answer:
    at = body.time if body.time is not None else int(time.time())
    sandbox.comments[body.comment_id] = body.record(at)
    try:
        response = await sandbox.post_webhook(body.body(at))
    except httpx.HTTPError as exc:
        raise ControlError(502, f"webhook delivery failed: {exc!r}") from exc
    return {"comment_id": body.comment_id, "status": response.status_code}


@control.post("/inbound")
async def inbound(body: Inbound, request: Request, sandbox: Sandbox = ReadyDep) -> Answer:
    event = Text(kind="text", **body.model_dump())
    [item], [status] = await emit_items(sandbox, Emit(events=[event]), str(request.base_url))
    if status >= 400:
        raise ControlError(502, f"webhook answered HTTP {status}")
    return {"mid": item["message"]["mid"], "timestamp": item["timestamp"]}


@control.post("/profiles")
async def set_profiles(
    body: dict[str, ProfileFields], request: Request, sandbox: SandboxDep
) -> Answer:
    base_url = str(request.base_url)
    return {
        igsid: sandbox.profiles.override(igsid, fields.model_dump(exclude_unset=True), base_url)
        for igsid, fields in body.items()
    }


@control.delete("/profiles")
async def clear_profiles(sandbox: SandboxDep) -> Answer:
    sandbox.profiles.clear()
    return {"success": True}


@control.get("/profile_requests")
async def profile_requests(sandbox: SandboxDep) -> Answer:
    return {"data": dict(sandbox.profiles.requests)}


@control.delete("/profile_requests")
async def clear_profile_requests(sandbox: SandboxDep) -> Answer:
    sandbox.profiles.requests.clear()
    return {"success": True}


@control.get("/media/{name}")
async def get_media(name: str, sandbox: SandboxDep) -> Response:
    if name in sandbox.expired_media:  # like an expired CDN link
        return Response(status_code=404)
    content_type, content = sandbox.files.get(name) or media.content(name)
    return Response(content, media_type=content_type)


@control.put("/media/{name}")
async def put_media(name: str, request: Request, sandbox: SandboxDep) -> Answer:
    content_type = request.headers.get("content-type", "application/octet-stream")
    sandbox.files[name] = (content_type, await request.body())
    return {"url": media.url(str(request.base_url), name)}


@control.post("/media/expire")
async def expire_media(body: MediaNames, sandbox: SandboxDep) -> Answer:
    sandbox.expired_media.update(body.names)
    return {"expired": sorted(sandbox.expired_media)}


@control.get("/proofs")
async def list_proofs(sandbox: SandboxDep) -> Answer:
    """Whether each Graph call with a token carried appsecret_proof, oldest first."""
    return {"data": sandbox.proofs}


@control.delete("/proofs")
async def clear_proofs(sandbox: SandboxDep) -> Answer:
    sandbox.proofs.clear()
    return {"success": True}


@control.get("/oauth")
async def get_oauth(sandbox: SandboxDep) -> Answer:
    oauth = sandbox.oauth
    return {
        **oauth.control.model_dump(),
        "calls": oauth.calls,
        "subscribed": oauth.subscribed,
        "unsubscribed": oauth.unsubscribed,
        "tokens": len(oauth.tokens),
    }


@control.post("/oauth")
async def set_oauth(body: OAuthControl, sandbox: SandboxDep) -> Answer:
    """Who approves next; the lists of calls and subscriptions start afresh (tokens issued
    stay valid)."""
    sandbox.oauth.control = body
    sandbox.oauth.calls.clear()
    sandbox.oauth.subscribed.clear()
    sandbox.oauth.unsubscribed.clear()
    return body.model_dump()


class Age(BaseModel):
    seconds: float


@control.post("/oauth/age")
async def age_tokens(body: Age, sandbox: SandboxDep) -> Answer:
    for issued in sandbox.oauth.tokens.values():
        issued.issued_at -= body.seconds
        issued.expires_at -= body.seconds
    return {"success": True}


@control.post("/conversations")
async def seed_conversations(body: Seed, sandbox: SandboxDep) -> Answer:
    return {"ids": sandbox.conversations.seed(body)}


@control.get("/conversations")
async def conversation_calls(sandbox: SandboxDep) -> Answer:
    return {"calls": sandbox.conversations.calls}


@control.delete("/conversations")
async def clear_conversations(sandbox: SandboxDep) -> Answer:
    sandbox.conversations.clear()
    return {"success": True}
