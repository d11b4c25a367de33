"""`mesh chat` (being written; see the open issue)."""

from __future__ import annotations

import click


@click.command(name="chat")
def command() -> None:
    """Not available yet."""
    raise click.ClickException("mesh chat is not available in this build yet")
