"""click options and callbacks shared by the commands that take network options."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any, TypeVar

import click

from mesh.errors import MeshError
from mesh.netaddr import check_host, parse_host_port
from mesh.runner import NetConfig
from mesh.wire import Address

F = TypeVar("F", bound=Callable[..., Any])


def host_option(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    """`--host`: an IP address literal, else a usage error."""
    try:
        return None if value is None else check_host(value)
    except MeshError as exc:
        raise click.BadParameter(str(exc)) from None


def _parse_peers(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> Any:
    try:
        return [parse_host_port(v) for v in values]
    except MeshError as exc:
        raise click.BadParameter(str(exc)) from None


def _parse_interfaces(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> Any:
    for value in values:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise click.BadParameter(f"{value!r} is not an IP address") from None
    return list(values)


def network_options(func: F) -> F:
    options = [
        click.option(
            "--peer",
            "peers",
            multiple=True,
            metavar="HOST:PORT",
            callback=_parse_peers,
            help="A peer to join through (repeatable).",
        ),
        click.option("--no-mdns", is_flag=True, help="Do not look for peers with mDNS."),
        click.option(
            "--interface",
            "interfaces",
            multiple=True,
            metavar="ADDR",
            callback=_parse_interfaces,
            help="Run mDNS on this local address only (repeatable; default: every "
            "non-loopback IPv4 interface there is).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def net_config(
    host: str | None,
    port: int | None,
    peers: list[Address],
    no_mdns: bool,
    interfaces: list[str],
) -> NetConfig:
    listen = host or (interfaces[0] if interfaces else "0.0.0.0")
    return NetConfig(listen, port, peers, not no_mdns, interfaces or None)
