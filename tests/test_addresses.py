"""Which hosts are visibly not public, without a DNS lookup (app/core/addresses.py)."""

import pytest

from app.core.addresses import local_host_reason


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "127.1",
        "2130706433",
        "0x7f.0.0.1",
        "0177.0.0.1",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fe80::1%eth0",
        "fc00::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "localhost",
        "localhost.",
        "api.localhost",
        "printer.local",
        "metadata.google.internal",
        "router.home.arpa",
        "box.localdomain",
        "intranet",
    ],
)
def test_local_hosts_are_named(host):
    assert local_host_reason(host) is not None


@pytest.mark.parametrize(
    "host",
    [
        "cdn.example.com",
        "8.8.8.8",
        "2001:4860:4860::8888",
        "cafe.de",
        "1e100.net",
        "xn--bcher-kva.de",
    ],
)
def test_public_hosts_pass(host):
    assert local_host_reason(host) is None
