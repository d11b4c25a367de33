"""`mesh share`: pass the app on to someone with no internet (see mesh/share.py)."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import click
import segno

from cli import render
from cli.params import host_option
from mesh import share
from mesh.errors import BundleError


@click.command(name="share")
@click.option("--prepare", is_flag=True, help="Build the bundle now (needs a package index).")
@click.option("--from", "source", metavar="DIR|URL", help="Save a bundle from a folder or URL.")
@click.option(
    "--to",
    "dest",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write the bundle to DIR (a USB stick) instead of serving it.",
)
@click.option(
    "--host",
    default="0.0.0.0",
    show_default=True,
    callback=host_option,
    help="Address to serve on.",
)
@click.option(
    "--port", type=click.IntRange(0, 65535), default=share.DEFAULT_PORT, show_default=True
)
@click.option(
    "--minutes",
    type=click.FloatRange(min=0, min_open=True, max=24 * 60),
    default=share.DEFAULT_MINUTES,
    show_default=True,
    help="Stop serving after this long.",
)
@click.option(
    "--platform",
    "platforms",
    multiple=True,
    metavar="TAG",
    help="With --prepare: also fetch wheels for this pip platform tag (repeatable).",
)
@click.pass_obj
def command(
    home: Path,
    prepare: bool,
    source: str | None,
    dest: Path | None,
    host: str,
    port: int,
    minutes: float,
    platforms: tuple[str, ...],
) -> None:
    """Serve (or write) everything needed to install mesh with no internet.

    Serves the bundle saved in HOME/bundle on the local network, read-only, for
    --minutes, and prints the URL, a QR code and the friend's install command.
    Prepare the bundle while you have internet: `mesh share --prepare` (from the
    project folder), or save one you were given: `mesh share --from DIR|URL`.
    """
    saved = share.bundle_path(home)
    if prepare or source:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        manifest = _fetch(saved, source) if source else _build(saved, platforms)
        click.echo(
            f"saved mesh-messenger {manifest.version} ({len(manifest.files)} wheels) in {saved}"
        )
        for tag in manifest.missing:
            render.hint(f"warning: no wheels for {tag}: the bundle does not cover it")
        if dest is None:
            return
    manifest = _saved(saved)
    if dest is not None:
        share.copy_bundle(saved, dest)
        click.echo(f"wrote the bundle to {dest}")
        click.echo(f"install from it: {share.install_command(str(dest))}")
        return
    _serve(saved, manifest, host, port, minutes)


def _build(saved: Path, platforms: tuple[str, ...]) -> share.Manifest:
    source = share.project_source()
    if source is None:
        raise BundleError(
            "no project folder to build the bundle from: run `mesh share --prepare` in "
            "mesh's project folder, or use `mesh share --from DIR|URL` with a bundle you "
            "were given"
        )
    render.hint(f"building the bundle from {source} (needs a package index)...")
    return share.build_bundle(saved, source, platforms)


def _fetch(saved: Path, source: str) -> share.Manifest:
    if "://" in source:
        return share.fetch_bundle(source, saved)
    return share.copy_bundle(Path(source).expanduser(), saved)


def _saved(saved: Path) -> share.Manifest:
    if not (saved / share.MANIFEST).is_file():
        raise BundleError(
            f"no install bundle in {saved}: run `mesh share --prepare` while you have "
            "internet, or `mesh share --from DIR|URL`"
        )
    return share.load_bundle(saved)


def _serve(saved: Path, manifest: share.Manifest, host: str, port: int, minutes: float) -> None:
    served: list[str] = []
    server = share.make_server(saved, host, port, served.append)
    bound = server.server_address[1]
    urls = share.share_urls(host, int(bound))
    if not urls:
        server.server_close()
        raise BundleError(
            "no network interface but loopback: nobody can reach this computer; "
            "use `mesh share --to DIR` to write the bundle to a USB stick"
        )
    until = time.strftime("%H:%M", time.localtime(time.time() + minutes * 60))
    click.echo(f"serving on {urls[0]}")
    for url in urls[1:]:
        click.echo(f"also on {url}")
    segno.make(urls[0], error="m").terminal(compact=True)
    ip = urls[0].split("//", 1)[1].rsplit(":", 1)[0].strip("[]")
    click.echo("a friend installs mesh with:")
    click.echo("  python3 -m venv ~/mesh-venv")
    click.echo("  " + share.install_command(urls[0], ip))
    click.echo(f"{len(manifest.files)} wheels, read-only; stops at {until} (Ctrl-C stops now)")
    with contextlib.suppress(KeyboardInterrupt):
        share.serve_for(server, minutes * 60)
    click.echo(f"stopped; served {len(served)} file(s)")
