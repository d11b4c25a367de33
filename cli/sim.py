"""`mesh sim` (being written; see the open issue)."""

from __future__ import annotations

import click


@click.command(name="sim")
def command() -> None:
    """Not available yet."""
    raise click.ClickException("mesh sim is not available in this build yet")
