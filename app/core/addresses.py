"""Which hosts are public, by what their name or address says alone (no DNS lookup: this
runs while a request waits). Fetching code must still check the addresses a name resolves
to; this only catches what is visibly local."""

import ipaddress
import socket

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

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
