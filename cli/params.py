"""click callbacks shared by the commands that take network options."""

from __future__ import annotations

from typing import Any

import click

from mesh.errors import MeshError
from mesh.netaddr import check_host


def host_option(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    """`--host`: an IP address literal, else a usage error."""
    try:
        return None if value is None else check_host(value)
    except MeshError as exc:
        raise click.BadParameter(str(exc)) from None
