"""The commands of a seized-device defence: passphrase, wipe, backup, restore, retention.

Passphrases come from a terminal prompt, or for scripts from the environment:
MESH_PASSPHRASE (the home's current one), MESH_NEW_PASSPHRASE (a new or duress one),
MESH_BACKUP_PASSPHRASE (a backup's). An empty value is an error, never a prompt.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from cli import render
from mesh import backup, vault
from mesh.errors import LocalError, LockedError, WrongPassphraseError
from mesh.home import env_passphrase, open_home, unlock_identity
from mesh.retention import DEFAULT_DAYS, get_days, set_days

MIN_PASSPHRASE = 8


def _from_env(name: str) -> str | None:
    if name not in os.environ:
        return None
    value = os.environ[name]
    if not value:
        raise LocalError(f"{name} is set but empty: unset it, or give the passphrase")
    return value


def read_passphrase(home: Path, attempt: int) -> str:
    """mesh.vault's passphrase source: MESH_PASSPHRASE (home.env_passphrase), else the
    one terminal prompt (render.passphrase_prompt)."""
    given = env_passphrase()
    if given is not None:
        if attempt > 1:
            raise WrongPassphraseError("wrong passphrase: MESH_PASSPHRASE does not unlock it")
        return given
    ask = render.passphrase_prompt()
    if ask is None:
        raise LockedError(
            "this home is locked: type its passphrase in a terminal, or set MESH_PASSPHRASE"
        )
    if attempt > 1:
        render.hint(f"wrong passphrase; try again ({attempt}/{vault.MAX_ATTEMPTS})")
    return ask()


def new_passphrase(what: str, env: str = "MESH_NEW_PASSPHRASE") -> str:
    value = _from_env(env)
    if value is None:
        if not sys.stdin.isatty():
            raise LocalError(f"no terminal to ask for the {what}: set {env}")
        value = click.prompt(what, hide_input=True, confirmation_prompt=True, err=True)
    if len(value) < MIN_PASSPHRASE:
        raise LocalError(f"a passphrase of at least {MIN_PASSPHRASE} characters, please")
    return value


def init_passphrase(choice: bool | None) -> str | None:
    """`mesh init`'s passphrase: asked on a terminal unless --no-passphrase."""
    if choice is False:
        return None
    if "MESH_PASSPHRASE" in os.environ:
        return new_passphrase("new passphrase", "MESH_PASSPHRASE")
    if choice or sys.stdin.isatty():
        return new_passphrase("new passphrase (protects this device)", "MESH_PASSPHRASE")
    return None


@click.command(name="passphrase")
@click.option("--duress", is_flag=True, help="Set a duress passphrase: typing it wipes.")
@click.pass_obj
def passphrase_command(home: Path, duress: bool) -> None:
    """Add or change the passphrase (or set a duress passphrase with --duress)."""
    open_home(home).close()  # unlocks (asks the current passphrase), migrates an old home
    if duress:
        vault.set_duress(home, new_passphrase("duress passphrase"))
        click.echo("duress passphrase set: typing it at unlock wipes this home silently")
        return
    vault.change_passphrase(home, new_passphrase("new passphrase"))
    click.echo("passphrase changed")


@click.command(name="wipe")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def wipe_command(home: Path, yes: bool) -> None:
    """Destroy this home now: key first (instant), then every file; stops `mesh up`."""
    if not yes:
        if not sys.stdin.isatty():
            raise LocalError("refusing to wipe without a terminal to confirm: add --yes")
        click.confirm(f"wipe {home} for good (identity, contacts, messages)?", abort=True)
    seconds = vault.wipe(home)
    click.echo(f"wiped {home} in {seconds * 1000:.0f} ms")


@click.command(name="backup")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path), required=False)
@click.option("--messages", is_flag=True, help="Include the messages too.")
@click.option("--words", is_flag=True, help="Print the identity as 24 recovery words.")
@click.pass_obj
def backup_command(home: Path, file: Path | None, messages: bool, words: bool) -> None:
    """Write an encrypted backup to FILE (its own passphrase), or --words."""
    if file is None and not words:
        raise click.UsageError("give a FILE, or --words")
    with open_home(home) as store:
        identity = unlock_identity(store, None)
        doc = backup.export(store, identity, messages) if file is not None else None
    if words:
        click.echo(backup.to_words(identity))
    if file is not None and doc is not None:
        secret = new_passphrase("backup passphrase", "MESH_BACKUP_PASSPHRASE")
        backup.write(file, backup.seal(doc, secret))
        click.echo(f"backup written to {file}")


@click.command(name="restore")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path), required=False)
@click.option("--words", is_flag=True, help="Restore from the 24 recovery words.")
@click.option("--force", is_flag=True, help="Wipe this home's identity and replace it.")
@click.option("--no-passphrase", "no_passphrase", is_flag=True, help="No passphrase here.")
@click.pass_obj
def restore_command(
    home: Path, file: Path | None, words: bool, force: bool, no_passphrase: bool
) -> None:
    """Restore an identity from FILE (`mesh backup`) or from --words."""
    if (file is None) == (not words):
        raise click.UsageError("give a FILE, or --words (not both)")
    if file is not None:
        data = backup.read(file)
        secret = _from_env("MESH_BACKUP_PASSPHRASE")
        if secret is None:
            secret = click.prompt("backup passphrase", hide_input=True, err=True)
        doc = backup.unseal(data, secret)
    else:
        typed = click.prompt("recovery words", hide_input=sys.stdin.isatty(), err=True)
        doc = {"v": 1, "seed": backup.from_words(typed).seed}
    identity = backup.restore(home, doc, init_passphrase(False if no_passphrase else None), force)
    click.echo(f"restored {identity.id}")


@click.command(name="retention")
@click.argument("days", type=click.IntRange(0, 36500), required=False)
@click.pass_obj
def retention_command(home: Path, days: int | None) -> None:
    """Show or set how many days read messages are kept (0: forever)."""
    with open_home(home) as store:
        if days is not None:
            set_days(store, days)
        current = get_days(store)
    shown = "forever" if current == 0 else f"{current} days"
    click.echo(f"read messages are kept {shown} (default {DEFAULT_DAYS})")


COMMANDS = (
    passphrase_command,
    wipe_command,
    backup_command,
    restore_command,
    retention_command,
)


def register(group: click.Group) -> None:
    """Add the commands to `mesh` and make `read_passphrase` the one unlock prompt."""
    vault.set_passphrase_source(read_passphrase)
    for command in COMMANDS:
        group.add_command(command)
