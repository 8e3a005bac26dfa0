"""A thin client for the parts of Meta's Graph API dmrelay uses."""

from dataclasses import dataclass
from typing import Any

import httpx

from app.core.settings import Settings
from app.meta.errors import GraphError


@dataclass(frozen=True)
class Account:
    """What the Graph API needs to act as one connected Instagram account."""

    connection: str
    platform_id: str
    page_id: str | None
    access_token: str

    @property
    def send_path_id(self) -> str:
        # Instagram Login sends as the IG account; Facebook Login as its Page.
        return self.platform_id if self.connection == "instagram_login" else self.page_id or ""


class GraphClient:
    def __init__(self, settings: Settings, http: httpx.AsyncClient) -> None:
        self._settings = settings
        self._http = http

    def _url(self, account: Account, path: str) -> str:
        base = self._settings.graph_base_url(account.connection)
        return f"{base}/{self._settings.meta_graph_version}/{path}"

    async def send_message(self, account: Account, body: dict[str, Any]) -> dict[str, Any]:
        """POST to the Send API; returns Meta's answer or raises GraphError.

        Transport errors (httpx.TransportError) propagate: whether Meta got the request is
        then unknown, and the caller decides.
        """
        response = await self._http.post(
            self._url(account, f"{account.send_path_id}/messages"),
            json=body,
            headers={"Authorization": f"Bearer {account.access_token}"},
        )
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if response.is_success and isinstance(payload, dict):
            return payload
        raise GraphError.from_response(response.status_code, payload)


def send_body(
    recipient_id: str,
    text: str | None,
    attachment: dict[str, str] | None,
    tag: str | None,
    reply_to_mid: str | None,
) -> dict[str, Any]:
    """The Send API body for one message."""
    message: dict[str, Any] = (
        {"text": text}
        if attachment is None
        else {"attachment": {"type": attachment["type"], "payload": {"url": attachment["url"]}}}
    )
    body: dict[str, Any] = {"recipient": {"id": recipient_id}, "message": message}
    if tag is not None:
        body["messaging_type"] = "MESSAGE_TAG"
        body["tag"] = tag
    if reply_to_mid is not None:
        body["reply_to"] = {"mid": reply_to_mid}
    return body
