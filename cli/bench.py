"""`mesh bench` (being written; see the open issue)."""

from __future__ import annotations

import click


@click.command(name="bench")
def command() -> None:
    """Not available yet."""
    raise click.ClickException("mesh bench is not available in this build yet")
