"""A fake of Meta's Graph API (Instagram messaging), answering as Meta documents it.

Graph calls go through one catch-all route so that any `/vNN.N/` prefix (or none) works and
unknown paths get Meta's own error. `/_sandbox/*` is the unauthenticated control surface.
"""

import asyncio
import base64
import hashlib
import json
import logging
import random
import re
import secrets
import uuid
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import parse_qsl

import httpx
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.background import BackgroundTask

from app.core.settings import Settings, get_settings
from app.sandbox import webhooks

log = logging.getLogger(__name__)

GRAPH_PATH = re.compile(r"(?:v\d+\.\d+/)?(?P<node>[^/]+)(?:/(?P<edge>[^/]+))?/?")
PARAM_KEY = re.compile(r"[^\[\]]+")  # "message[attachment][type]" -> message, attachment, type
ATTACHMENT_TYPES = {"image", "audio", "video", "file", "MEDIA_SHARE", "like_heart"}
SENDER_ACTIONS = {"react", "unreact", "typing_on", "typing_off", "mark_seen"}
STATUS_BY_CODE = {1: 500, 2: 500, 4: 403, 10: 403, 17: 403, 32: 403, 200: 403, 613: 403}
TRANSIENT_ERRORS = [
    (1, None, "An unknown error occurred"),
    (2, None, "An unexpected error has occurred. Please retry your request later."),
    (4, None, "(#4) Application request limit reached"),
    (613, 2534040, "(#613) Calls to this api have exceeded the rate limit."),
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

    def response(self) -> JSONResponse:
        error: dict[str, Any] = {
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


class RecipientFault(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: int
    error_subcode: int | None = None
    message: str = "Error injected by the dmrelay sandbox"


class Faults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    transient_rate: float = Field(0.0, ge=0, le=1)
    latency_ms: int = Field(0, ge=0)
    recipients: dict[str, RecipientFault] = {}
    revoked_tokens: list[str] = []


class Inbound(BaseModel):
    account_id: str
    sender_id: str
    text: str


class Sandbox:
    """Per-app state: what was sent, the active faults, and the webhook client."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.sent: list[dict] = []
        self.faults = Faults()
        self._client: httpx.AsyncClient | None = None
        self._deliveries: set[asyncio.Task] = set()

    @property
    def client(self) -> httpx.AsyncClient:
        # Created on first use: ASGITransport-based tests never run the lifespan.
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=10)
        return self._client

    async def post_webhook(self, payload: dict) -> httpx.Response:
        url = self.settings.sandbox_webhook_url
        return await webhooks.post_event(self.client, url, self.settings.meta_app_secret, payload)

    async def spawn_echo(self, payload: dict) -> None:
        task = asyncio.create_task(self._deliver_echo(payload))
        self._deliveries.add(task)  # keep a reference until done, or the task may be collected
        task.add_done_callback(self._deliveries.discard)

    async def _deliver_echo(self, payload: dict) -> None:
        try:
            response = await self.post_webhook(payload)
        except httpx.HTTPError as exc:
            log.warning("sandbox echo webhook failed: %r", exc)
            return
        if response.is_error:
            log.warning("sandbox echo webhook answered HTTP %s", response.status_code)

    async def aclose(self) -> None:
        await asyncio.gather(*self._deliveries, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def new_mid() -> str:
    return "aWdfZAG1faXRlbTox" + base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def parse_params(pairs: list[tuple[str, str]]) -> dict:
    """Form/query pairs as Graph reads them: JSON-string values and bracket keys both nest."""
    params: dict = {}
    for key, value in pairs:
        *parents, leaf = PARAM_KEY.findall(key) or [key]
        node = params
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise GraphError(100, f"(#100) Invalid parameter {key}")
        if value.startswith(("{", "[")):
            with suppress(ValueError):
                value = json.loads(value)
        node[leaf] = value
    return params


async def read_params(request: Request) -> dict:
    params = parse_params(parse_qsl(request.url.query))
    body = await request.body()
    if "json" in request.headers.get("content-type", ""):
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


def access_token(request: Request, params: dict) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() in ("bearer", "oauth") and token.strip():
        return token.strip()
    token = params.get("access_token")
    return token if isinstance(token, str) and token else None


def check_token(token: str | None, faults: Faults) -> None:
    if token is None:
        raise GraphError(190, "Invalid OAuth access token - Cannot parse access token")
    if token in faults.revoked_tokens:
        raise GraphError(
            190,
            "Error validating access token: The session has been invalidated because the user "
            "changed their password or Facebook has changed the session for security reasons.",
            460,
        )


def check_send(params: dict) -> str:
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


def check_message(message: Any) -> None:
    if not isinstance(message, dict):
        raise GraphError(100, "(#100) Param message must be a JSON object", 2534015)
    attachments = [message["attachment"]] if "attachment" in message else message.get("attachments")
    if not message.get("text") and not attachments:
        raise GraphError(
            100, "(#100) Message cannot be empty, must provide valid attachment or text", 2534015
        )
    for attachment in attachments or []:
        if not (isinstance(attachment, dict) and attachment.get("type") in ATTACHMENT_TYPES):
            raise GraphError(
                100,
                "(#100) Param message[attachment][type] must be one of "
                "{image, audio, video, file, MEDIA_SHARE, like_heart}",
            )


def unsupported(method: str, node: str) -> GraphError:
    return GraphError(
        100,
        f"Unsupported {method.lower()} request. Object with ID '{node}' does not exist, cannot be "
        "loaded due to missing permissions, or does not support this operation. Please read the "
        "Graph API documentation at https://developers.facebook.com/docs/graph-api",
        33,
        error_type="GraphMethodException",
    )


def me(token: str) -> dict:
    # Stable fake ids per token, so different tokens look like different accounts.
    digest = int(hashlib.sha256(token.encode()).hexdigest(), 16)
    return {
        "user_id": f"1784{digest % 10**13:013d}",
        "username": "sandbox_user",
        "id": f"{(digest >> 64) % 10**16:016d}",
    }


async def graph_error(request: Request, exc: GraphError) -> JSONResponse:
    return exc.response()


def get_sandbox(request: Request) -> Sandbox:
    return request.app.state.sandbox


SandboxDep = Annotated[Sandbox, Depends(get_sandbox)]
control = APIRouter(prefix="/_sandbox")


@control.get("/sent")
async def list_sent(sandbox: SandboxDep) -> dict:
    return {"data": sandbox.sent}


@control.delete("/sent")
async def clear_sent(sandbox: SandboxDep) -> dict:
    sandbox.sent.clear()
    return {"success": True}


@control.get("/faults")
async def get_faults(sandbox: SandboxDep) -> Faults:
    return sandbox.faults


@control.post("/faults")
async def set_faults(faults: Faults, sandbox: SandboxDep) -> Faults:
    sandbox.faults = faults
    return faults


@control.post("/inbound", response_model=None)
async def inbound(body: Inbound, sandbox: SandboxDep) -> JSONResponse | dict:
    if not sandbox.settings.sandbox_webhook_url:
        return JSONResponse(
            {"error": "SANDBOX_WEBHOOK_URL is not set: the sandbox has nowhere to post"},
            status_code=409,
        )
    mid, timestamp = new_mid(), webhooks.now_ms()
    payload = webhooks.envelope(
        body.account_id, body.sender_id, body.account_id, {"mid": mid, "text": body.text}, timestamp
    )
    try:
        response = await sandbox.post_webhook(payload)
    except httpx.HTTPError as exc:
        return JSONResponse({"error": f"webhook delivery failed: {exc!r}"}, status_code=502)
    if response.is_error:
        return JSONResponse(
            {"error": f"webhook answered HTTP {response.status_code}"}, status_code=502
        )
    return {"mid": mid, "timestamp": timestamp}


graph = APIRouter()


@graph.api_route("/{path:path}", methods=["GET", "POST"], include_in_schema=False)
async def graph_call(path: str, request: Request, sandbox: SandboxDep):
    faults = sandbox.faults
    if faults.latency_ms:
        await asyncio.sleep(faults.latency_ms / 1000)
    params = await read_params(request)
    token = access_token(request, params)
    check_token(token, faults)
    if random.random() < faults.transient_rate:
        code, subcode, message = random.choice(TRANSIENT_ERRORS)
        raise GraphError(code, message, subcode, is_transient=True)

    match = GRAPH_PATH.fullmatch(path)
    node, edge = (match["node"], match["edge"]) if match else (path, None)
    if request.method == "GET" and node == "me" and edge is None:
        return me(token)
    if request.method == "POST" and edge == "subscribed_apps":
        return {"success": True}
    if request.method != "POST" or edge != "messages":
        raise unsupported(request.method, node)

    recipient_id = check_send(params)
    fault = faults.recipients.get(recipient_id)
    if fault:
        raise GraphError(fault.code, fault.message, fault.error_subcode)
    if params.get("sender_action") is not None:  # as at Meta: answered, never recorded or echoed
        return {"recipient_id": recipient_id}

    mid = new_mid()
    record = {
        "message_id": mid,
        "recipient_id": recipient_id,
        "account_id": node,
        "message": params["message"],
        "received_at": datetime.now(UTC).isoformat(),
    }
    record.update({k: params[k] for k in ("messaging_type", "tag", "reply_to") if k in params})
    sandbox.sent.append(record)

    answer = {"recipient_id": recipient_id, "message_id": mid}
    if not sandbox.settings.sandbox_webhook_url:
        return answer
    echo = webhooks.envelope(
        node, node, recipient_id, webhooks.echo_message(mid, params["message"]), webhooks.now_ms()
    )
    # A background task runs once the answer is sent; it only spawns, so it never holds that up.
    return JSONResponse(answer, background=BackgroundTask(sandbox.spawn_echo, echo))


def create_app(settings: Settings | None = None) -> FastAPI:
    sandbox = Sandbox(settings or get_settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await sandbox.aclose()

    app = FastAPI(title="dmrelay sandbox Graph API", lifespan=lifespan)
    app.state.sandbox = sandbox
    app.add_exception_handler(GraphError, graph_error)
    app.include_router(control)
    app.include_router(graph)  # last: its catch-all route must not shadow /_sandbox
    return app
