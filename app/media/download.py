"""Fetching media from the web (Meta's CDN): public addresses on allowed ports only, bounded in
size and time.

A webhook names the URLs, so a forged or odd one must not make dmrelay reach into its own
network. Each request resolves its host once, checks every address it got, and connects to a
checked address: the URL's host is replaced by that address, while the Host header and TLS
(SNI and the certificate check, through httpx's `sni_hostname` extension) keep the name. So
DNS cannot answer differently between the check and the connect (rebinding). Redirects are
followed by hand, each hop checked the same way.
"""

import asyncio
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urljoin

import httpx

from app.core.addresses import Resolver, Unresolvable, is_ip, is_public_ip, pinned, resolve
from app.core.settings import Settings

MAX_REDIRECTS = 3
# A probe reads this much of a file: enough for any format's signature.
PROBE_BYTES = 64
CHUNK = 64 * 1024
DEFAULT_PORTS = {"http": 80, "https": 443}

T = TypeVar("T")


class DownloadError(Exception):
    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


def create_client() -> httpx.AsyncClient:
    """The client media is fetched with. Connections are not kept: one is made to an address
    for one host, and must not carry a request for another host that resolves there."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(30.0, connect=5.0),
        limits=httpx.Limits(max_keepalive_connections=0),
    )


async def download(
    http: httpx.AsyncClient, url: str, settings: Settings, resolver: Resolver = resolve
) -> tuple[bytes, str]:
    """The bytes and content type at a URL; raises DownloadError."""
    return await _bounded(_download(http, url, settings, resolver), settings)


async def status_of(
    http: httpx.AsyncClient, url: str, settings: Settings, resolver: Resolver = resolve
) -> int:
    """The HTTP status a URL answers with (after redirects), its body unread; raises
    DownloadError."""
    return await _bounded(_status_of(http, url, settings, resolver), settings)


@dataclass(frozen=True)
class Probe:
    """What a media URL's server says of the file: its first bytes (enough to tell the
    format), its declared type, its size when it gives one, and what names this version of
    it (ETag, Last-Modified)."""

    head: bytes
    content_type: str | None
    size: int | None
    version: str


async def probe(
    http: httpx.AsyncClient,
    url: str,
    settings: Settings,
    resolver: Resolver = resolve,
    timeout: float | None = None,
) -> Probe:
    """Ask the server about a media URL with one ranged GET (its first PROBE_BYTES), every
    hop checked as a download's; raises DownloadError (transient for no answer, a 5xx)."""
    return await _bounded(_probe(http, url, settings, resolver), settings, timeout)


async def _probe(
    http: httpx.AsyncClient, url: str, settings: Settings, resolver: Resolver
) -> Probe:
    ranged = {"Range": f"bytes=0-{PROBE_BYTES - 1}"}
    async with open_url(http, url, settings, resolver, ranged) as response:
        if response.status_code >= 400:
            raise DownloadError(
                f"the server answered HTTP {response.status_code}",
                transient=response.status_code >= 500,
            )
        head = bytearray()
        async for chunk in response.aiter_bytes(PROBE_BYTES):
            head += chunk
            if len(head) >= PROBE_BYTES:
                break  # a server that ignored the range: the rest is not read
        content_type = response.headers.get("content-type")
        version = " ".join(
            response.headers.get(name, "") for name in ("etag", "last-modified")
        ).strip()
        return Probe(bytes(head[:PROBE_BYTES]), content_type, _total_size(response), version)


def _total_size(response: httpx.Response) -> int | None:
    """The whole file's size: Content-Range's total for a partial answer, else the
    Content-Length of the full one."""
    if response.status_code == 206:
        total = response.headers.get("content-range", "").rpartition("/")[2]
        return int(total) if total.isdigit() else None
    declared = response.headers.get("content-length", "")
    return int(declared) if declared.isdigit() else None


async def _bounded(work: Awaitable[T], settings: Settings, timeout: float | None = None) -> T:
    try:
        async with asyncio.timeout(timeout or settings.media_download_timeout_seconds):
            return await work
    except TimeoutError as error:
        raise DownloadError("the download took too long", transient=True) from error
    except httpx.TransportError as error:
        raise DownloadError(f"{type(error).__name__}: {error}", transient=True) from error


async def _download(
    http: httpx.AsyncClient, url: str, settings: Settings, resolver: Resolver
) -> tuple[bytes, str]:
    async with open_url(http, url, settings, resolver) as response:
        if response.status_code >= 400:
            raise DownloadError(
                f"HTTP {response.status_code}", transient=response.status_code >= 500
            )
        content_type = response.headers.get("content-type", "application/octet-stream")
        return await _read(response, settings.media_max_bytes), content_type


async def _status_of(
    http: httpx.AsyncClient, url: str, settings: Settings, resolver: Resolver
) -> int:
    async with open_url(http, url, settings, resolver) as response:
        return response.status_code


@asynccontextmanager
async def open_url(
    http: httpx.AsyncClient,
    url: str,
    settings: Settings,
    resolver: Resolver = resolve,
    headers: dict[str, str] | None = None,
) -> AsyncIterator[httpx.Response]:
    """The streamed response at a URL, redirects followed, every hop checked."""
    for _ in range(MAX_REDIRECTS + 1):
        response = await _get(http, url, settings, resolver, headers or {})
        if response.is_redirect and "location" in response.headers:
            await response.aclose()
            url = urljoin(url, response.headers["location"])
            continue
        try:
            yield response
        finally:
            await response.aclose()
        return
    raise DownloadError(f"more than {MAX_REDIRECTS} redirects")


async def _get(
    http: httpx.AsyncClient,
    url: str,
    settings: Settings,
    resolver: Resolver,
    extra_headers: dict[str, str],
) -> httpx.Response:
    """One GET, sent to a checked address of the URL's host (the next one if it refuses the
    connection)."""
    try:
        target = httpx.URL(url)
    except httpx.InvalidURL as error:
        raise DownloadError(f"not a valid URL: {url!r}") from error
    addresses = await checked_addresses(target, settings, resolver)
    for address in addresses[:-1]:
        try:
            return await _send(http, target, address, extra_headers)
        except httpx.ConnectError:
            continue
    return await _send(http, target, addresses[-1], extra_headers)


async def _send(
    http: httpx.AsyncClient, target: httpx.URL, address: str, extra_headers: dict[str, str]
) -> httpx.Response:
    url, headers, extensions = pinned(target, address)
    request = http.build_request(
        "GET", url, headers={**extra_headers, **headers}, extensions=extensions
    )
    return await http.send(request, stream=True, follow_redirects=False)


async def checked_addresses(url: httpx.URL, settings: Settings, resolver: Resolver) -> list[str]:
    """The addresses a URL may be fetched from: an http(s) URL on an allowed port whose host
    resolves, once, to public addresses only (unless MEDIA_ALLOW_PRIVATE_HOSTS)."""
    if url.scheme not in DEFAULT_PORTS or not url.host:
        raise DownloadError(f"not an http(s) URL: {str(url)!r}")
    port = url.port or DEFAULT_PORTS[url.scheme]
    if port not in settings.media_allowed_ports:
        allowed = ", ".join(str(p) for p in settings.media_allowed_ports)
        raise DownloadError(
            f"{url.host} port {port} is not allowed (MEDIA_ALLOWED_PORTS: {allowed})"
        )
    host = url.raw_host.decode("ascii")
    try:
        addresses = [url.host] if is_ip(url.host) else await resolver(host, port)
    except Unresolvable as error:
        raise DownloadError(str(error), transient=True) from error
    if not addresses:
        raise DownloadError(f"cannot resolve {host}", transient=True)
    if not settings.media_allow_private_hosts:
        for address in addresses:
            if not is_public_ip(address):
                raise DownloadError(f"{host} resolves to non-public address {address}")
    return addresses


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
