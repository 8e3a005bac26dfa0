"""Where a customer webhook may point: https (http only with WEBHOOK_ALLOW_HTTP), and only at
public addresses (private, loopback, link-local and metadata ones only with
WEBHOOK_ALLOW_PRIVATE_HOSTS). Checked when an endpoint is created or changed, and again at
every attempt, on the addresses the host resolves to then, one of which the attempt connects
to (app/core/addresses.py:pinned)."""

import asyncio
from functools import lru_cache

import httpx

from app.core.addresses import (
    Resolver,
    Unresolvable,
    is_ip,
    is_public_ip,
    local_host_reason,
)
from app.core.settings import Settings

DEFAULT_PORTS = {"http": 80, "https": 443}
# A lookup made while an API request waits.
RESOLVE_SECONDS = 5.0


class Refused(Exception):
    """The URL may not be sent to; the message says why, in a sentence."""


def parse(url: str, settings: Settings) -> httpx.URL:
    """The URL, if its form is allowed (no DNS); raises Refused."""
    return _parse(url, settings.webhook_allow_http, settings.webhook_allow_private_hosts)


# Parsed once per URL and rule (every attempt checks it; a refusal, raised, is not cached).
@lru_cache(maxsize=4096)
def _parse(url: str, allow_http: bool, allow_private_hosts: bool) -> httpx.URL:
    try:
        target = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as error:
        raise Refused(f"{url!r} is not a valid URL") from error
    allowed = ("https", "http") if allow_http else ("https",)
    if target.scheme not in allowed:
        raise Refused("the URL must start with https://")
    if not target.host:
        raise Refused("the URL has no host")
    if target.userinfo:
        raise Refused("the URL may not carry a user name or password")
    if not allow_private_hosts:
        reason = local_host_reason(target.host)
        if reason is not None:
            raise Refused(f"the URL's host is not public: {reason}")
    return target


async def addresses(target: httpx.URL, settings: Settings, resolver: Resolver) -> list[str]:
    """The addresses the URL's host resolves to now, each one allowed; raises Refused."""
    host = target.raw_host.decode("ascii")
    port = target.port or DEFAULT_PORTS[target.scheme]
    try:
        async with asyncio.timeout(RESOLVE_SECONDS):
            found = [target.host] if is_ip(target.host) else await resolver(host, port)
    except (Unresolvable, TimeoutError) as error:
        raise Refused(f"{host} cannot be resolved") from error
    if not found:
        raise Refused(f"{host} cannot be resolved")
    if not settings.webhook_allow_private_hosts:
        for address in found:
            if not is_public_ip(address):
                raise Refused(f"{host} resolves to {address}, which is not a public address")
    return found


async def check(url: str, settings: Settings, resolver: Resolver) -> None:
    """Refuse (Refused) a URL an endpoint may not have."""
    await addresses(parse(url, settings), settings, resolver)
