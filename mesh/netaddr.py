"""Strict HOST:PORT parsing for what users type (`--peer`, `--host`): an IPv4 or IPv6
literal (IPv6 in brackets with a port) and a port from 1 to 65535, checked before any
socket is made, so a typo is a usage error and never a dead transport."""

from __future__ import annotations

import ipaddress

import ifaddr

from mesh.errors import InvalidAddressError
from mesh.wire import Address


def check_host(value: str) -> str:
    """An IP address literal (brackets allowed around IPv6); InvalidAddressError."""
    host = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        raise InvalidAddressError(f"{value!r} is not an IPv4 or IPv6 address") from None


def parse_host_port(value: str) -> Address:
    """'192.168.1.5:4000' or '[fe80::1]:4000' -> (host, port); InvalidAddressError."""
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise InvalidAddressError(f"{value!r} is not HOST:PORT (e.g. 192.168.1.5:4000)")
    if ":" in host and not host.startswith("["):
        raise InvalidAddressError(f"{value!r}: write an IPv6 address as [ADDR]:PORT")
    if not port.isascii() or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise InvalidAddressError(f"{value!r}: the port must be a number from 1 to 65535")
    return (check_host(host), int(port))


def lan_ipv4_addresses() -> list[str]:
    """This computer's IPv4 addresses but loopback: where mDNS runs by default, and
    where `mesh share` can be reached."""
    return [
        str(ip.ip)
        for adapter in ifaddr.get_adapters()
        for ip in adapter.ips
        if isinstance(ip.ip, str) and not ip.ip.startswith("127.")
    ]
