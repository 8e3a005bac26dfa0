"""Which hosts are public, by what their name or address says alone (no DNS lookup: this
runs while a request waits). Fetching code must still check the addresses a name resolves
to; this only catches what is visibly local.

For that, outbound requests (media downloads, customer webhooks) resolve a host once
(`resolve`, or a `Resolver` injected by tests), check every address, and connect to a checked
one (`pinned`): so DNS cannot answer differently between the check and the connect."""

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# (host, port) -> the addresses it resolves to, as strings.
Resolver = Callable[[str, int], Awaitable[list[str]]]


class Unresolvable(Exception):
    pass


async def resolve(host: str, port: int) -> list[str]:
    """The system resolver's addresses for a host, preferred first."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_ADDRCONFIG
        )
    except socket.gaierror as error:
        raise Unresolvable(f"cannot resolve {host}") from error
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def is_public_ip(address: str) -> bool:
    """An address as a resolver gives it (a string) is public; one with an IPv6 zone is not."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    return is_public_address(ip)


def pinned(url: httpx.URL, address: str) -> tuple[httpx.URL, dict[str, str], dict[str, str]]:
    """The URL, headers and httpx extensions that send a request for `url` to `address`: the
    Host header and TLS (SNI and the certificate check) keep the URL's name."""
    headers = {"Host": url.netloc.decode("ascii")}
    extensions: dict[str, str] = {}
    if url.scheme == "https" and not is_ip(url.host):
        extensions["sni_hostname"] = url.raw_host.decode("ascii")
    return url.copy_with(host=address), headers, extensions


# Names that never lead to the public internet (RFC 6761, RFC 6762, RFC 8375, and the
# private-use top-level domain ICANN reserved in 2024), or that by custom name one's own
# machine or network.
LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".home.arpa", ".localdomain")


def is_public_address(address: IPAddress) -> bool:
    """Routable on the public internet: not private, loopback, link-local, shared, reserved,
    unspecified or multicast."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        # ::ffff:127.0.0.1 is 127.0.0.1 (and Python before 3.13 calls it global).
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def literal_address(host: str) -> IPAddress | None:
    """The IP address a host names literally, in any form a resolver takes as one (inet_aton
    reads "127.1", "2130706433" and "0x7f.0.0.1" as 127.0.0.1 too), else None."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if not host or not all(c.isascii() and (c.isalnum() or c == ".") for c in host):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, ValueError):
        return None


def local_host_reason(host: str) -> str | None:
    """Why a URL's host (as urllib's `hostname` gives it) is visibly not public, or None."""
    address = literal_address(host)
    if address is not None:
        return None if is_public_address(address) else f"{address} is not a public address"
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(LOCAL_SUFFIXES):
        return f"{host} is a local name"
    if "." not in name:
        return f"{host} is not a public host name (it has no domain)"
    return None
