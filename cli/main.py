"""The `mesh` command: parses, calls mesh, prints."""

from __future__ import annotations

import click

from cli import bench, chat, sim


@click.group()
def cli() -> None:
    """mesh-messenger: a serverless peer-to-peer messenger."""


cli.add_command(bench.command)
cli.add_command(sim.command)
cli.add_command(chat.command)


def main() -> None:
    cli()
