"""Fetching media from Meta's CDN: public addresses only, bounded in size and time."""

import asyncio
import ipaddress
import socket
from urllib.parse import urljoin, urlparse

import httpx

from app.core.settings import Settings

MAX_REDIRECTS = 3
CHUNK = 64 * 1024


class DownloadError(Exception):
    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


async def download(http: httpx.AsyncClient, url: str, settings: Settings) -> tuple[bytes, str]:
    """The bytes and content type at a URL; raises DownloadError."""
    try:
        async with asyncio.timeout(settings.media_download_timeout_seconds):
            return await _follow(http, url, settings)
    except TimeoutError as error:
        raise DownloadError("the download took too long", transient=True) from error
    except httpx.TransportError as error:
        raise DownloadError(f"{type(error).__name__}: {error}", transient=True) from error


async def _follow(http: httpx.AsyncClient, url: str, settings: Settings) -> tuple[bytes, str]:
    # Redirects are followed by hand, so that every hop's address is checked.
    for _ in range(MAX_REDIRECTS + 1):
        await check_public(url, settings)
        async with http.stream("GET", url, follow_redirects=False) as response:
            if response.is_redirect and "location" in response.headers:
                url = urljoin(url, response.headers["location"])
                continue
            if response.status_code >= 400:
                raise DownloadError(
                    f"HTTP {response.status_code}", transient=response.status_code >= 500
                )
            return await _read(response, settings.media_max_bytes), response.headers.get(
                "content-type", "application/octet-stream"
            )
    raise DownloadError(f"more than {MAX_REDIRECTS} redirects")


async def _read(response: httpx.Response, limit: int) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise DownloadError(f"the media is {declared} bytes; the limit is {limit}")
    data = bytearray()
    async for chunk in response.aiter_bytes(CHUNK):
        data += chunk
        if len(data) > limit:
            raise DownloadError(f"the media is over the {limit}-byte limit")
    return bytes(data)


async def check_public(url: str, settings: Settings) -> None:
    """Refuse URLs that are not http(s) or that resolve to a private, loopback or link-local
    address: a webhook must not make dmrelay fetch from inside its own network."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise DownloadError(f"not an http(s) URL: {url!r}")
    if settings.media_allow_private_hosts:
        return
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            parsed.hostname, parsed.port or 443, type=socket.SOCK_STREAM
        )
    except socket.gaierror as error:
        raise DownloadError(f"cannot resolve {parsed.hostname}", transient=True) from error
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise DownloadError(f"{parsed.hostname} resolves to non-public address {address}")
