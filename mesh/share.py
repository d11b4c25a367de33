"""Pass the app on: a bundle of mesh and every dependency, to install with no internet.

A bundle is one flat folder:

    mesh_messenger-X-py3-none-any.whl   mesh itself, already built (no build backend needed)
    *.whl                               every dependency, for this platform and Python
                                        (and for any extra `--platform` asked for)
    index.html                          the one-page instructions, with a link to every
                                        wheel, so `pip --find-links URL` finds them
    README.txt                          the same instructions, as text (for a USB stick)
    bundle.json                         the manifest: version, targets, each file's SHA-256

Where a bundle comes from (the internet is gone exactly when a friend needs the app):

- `mesh share --prepare` builds one while a package index is reachable (`pip wheel` of
  the project folder, so it needs a source checkout) and saves it in HOME/bundle;
- `mesh share --from DIR|URL` copies one, checking every hash, from a USB stick or from
  another person's `mesh share`: whoever installed from a friend can pass it on in turn.

`mesh share` serves the saved bundle read-only over HTTP (GET/HEAD of the bundle's own
files only) until a time limit; `mesh share --to DIR` writes a copy to a folder.
"""

from __future__ import annotations

import hashlib
import html
import http.server
import json
import logging
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mesh import __version__
from mesh.errors import BundleError
from mesh.netaddr import lan_ipv4_addresses

log = logging.getLogger(__name__)

BUNDLE_DIR = "bundle"  # under the home directory
MANIFEST = "bundle.json"
FORMAT = 1
MAX_BUNDLE_BYTES = 500 * 1024 * 1024  # refuse to fetch more than this from a peer
DEFAULT_PORT = 8765
DEFAULT_MINUTES = 30
PACKAGE = "mesh-messenger"


@dataclass(frozen=True)
class Manifest:
    version: str
    python: str
    targets: list[str]
    files: dict[str, str]  # wheel file name -> SHA-256 hex
    missing: list[str] = field(default_factory=list)  # targets that could not be fetched

    def to_json(self) -> str:
        doc = {
            "format": FORMAT,
            "version": self.version,
            "python": self.python,
            "targets": self.targets,
            "files": self.files,
            "missing": self.missing,
        }
        return json.dumps(doc, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        try:
            doc = json.loads(text)
            if doc.get("format") != FORMAT:
                raise BundleError(f"bundle format {doc.get('format')!r} is not {FORMAT}")
            files = {str(k): str(v) for k, v in dict(doc["files"]).items()}
            manifest = cls(
                str(doc["version"]),
                str(doc["python"]),
                [str(t) for t in doc["targets"]],
                files,
                [str(t) for t in doc.get("missing", [])],
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BundleError(f"{MANIFEST} is not a bundle manifest ({exc})") from None
        for name in files:
            if not _safe_name(name):
                raise BundleError(f"{MANIFEST} names a file outside the bundle: {name!r}")
        return manifest

    @property
    def mesh_wheel(self) -> str | None:
        return next((n for n in sorted(self.files) if n.startswith("mesh_messenger-")), None)


def _safe_name(name: str) -> bool:
    return name.endswith(".whl") and "/" not in name and "\\" not in name and name[0] != "."


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def this_target() -> str:
    return f"{sys.implementation.name}{sys.version_info.major}{sys.version_info.minor}-" + (
        f"{platform.system().lower()}_{platform.machine()}"
    )


# -- building, checking and copying -------------------------------------------------------


def bundle_path(home: Path) -> Path:
    return home / BUNDLE_DIR


def project_source(cwd: Path | None = None) -> Path | None:
    """The project folder: the one mesh runs from (an editable install), else the current
    directory if it is mesh's project folder (after `pip install .`); None otherwise."""
    here = Path(__file__).resolve().parent.parent
    for root in (here, Path.cwd() if cwd is None else cwd):
        pyproject = root / "pyproject.toml"
        if pyproject.is_file() and f'name = "{PACKAGE}"' in pyproject.read_text("utf-8"):
            return root
    return None


def _pip(args: Sequence[str]) -> None:
    command = [sys.executable, "-m", "pip", *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise BundleError(f"pip failed to build the bundle (is a package index reachable?): {last}")


def build_bundle(dest: Path, source: Path, platforms: Sequence[str] = ()) -> Manifest:
    """Build mesh's wheel and fetch every dependency's wheel into `dest` (replaced whole).

    `platforms` are extra pip platform tags (e.g. `macosx_11_0_arm64`) to add wheels for,
    for this Python version; one that cannot be fetched is listed in `missing`."""
    with tempfile.TemporaryDirectory(prefix=".bundle-", dir=dest.parent) as tmp:
        work = Path(tmp)
        _pip(["wheel", "--quiet", "--wheel-dir", str(work), str(source)])
        wheel = next(work.glob("mesh_messenger-*.whl"), None)
        if wheel is None:
            raise BundleError("pip built no wheel of mesh")
        missing = []
        pyver = f"{sys.version_info.major}.{sys.version_info.minor}"
        for tag in platforms:
            try:
                _pip(["download", "--quiet", "--only-binary=:all:", "--platform", tag,
                      "--python-version", pyver, "--dest", str(work), str(wheel)])  # fmt: skip
            except BundleError as exc:
                log.warning("no wheels for %s: %s", tag, exc)
                missing.append(tag)
        files = {p.name: sha256_file(p) for p in sorted(work.glob("*.whl"))}
        targets = [this_target()] + [f"cp{pyver.replace('.', '')}-{t}" for t in platforms]
        manifest = Manifest(__version__, pyver, targets, files, missing)
        _write_pages(work, manifest)
        _replace_dir(work, dest)
    return manifest


def _replace_dir(new: Path, dest: Path) -> None:
    final = Path(tempfile.mkdtemp(prefix=".bundle-new-", dir=dest.parent))
    for item in new.iterdir():
        shutil.move(str(item), final / item.name)
    if dest.exists():
        old = dest.with_name(dest.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        dest.rename(old)
        final.rename(dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        final.rename(dest)
    dest.chmod(0o755)


def load_bundle(folder: Path) -> Manifest:
    """The manifest of a complete, unaltered bundle in `folder`; BundleError otherwise."""
    manifest_file = folder / MANIFEST
    if not manifest_file.is_file():
        raise BundleError(f"no install bundle in {folder}")
    manifest = Manifest.from_json(manifest_file.read_text("utf-8"))
    if manifest.mesh_wheel is None:
        raise BundleError(f"the bundle in {folder} has no wheel of mesh")
    for name, digest in manifest.files.items():
        path = folder / name
        if not path.is_file():
            raise BundleError(f"the bundle in {folder} lacks {name}")
        if sha256_file(path) != digest:
            raise BundleError(f"{name} in {folder} does not match its hash in {MANIFEST}")
    return manifest


def copy_bundle(source: Path, dest: Path) -> Manifest:
    """Check the bundle in `source` and write a copy to `dest` (created if needed)."""
    manifest = load_bundle(source)
    dest.mkdir(parents=True, exist_ok=True)
    for name in manifest.files:
        shutil.copyfile(source / name, dest / name)
    _write_pages(dest, manifest)
    return load_bundle(dest)


def fetch_bundle(url: str, dest: Path, timeout: float = 30.0) -> Manifest:
    """Download the bundle another `mesh share` serves at `url` into `dest`, hashes checked."""
    base = url if url.endswith("/") else url + "/"
    manifest = Manifest.from_json(_get(base + MANIFEST, timeout, 1 << 20).decode("utf-8"))
    with tempfile.TemporaryDirectory(prefix=".bundle-", dir=dest.parent) as tmp:
        work = Path(tmp)
        budget = MAX_BUNDLE_BYTES
        for name, digest in manifest.files.items():
            data = _get(base + urllib.parse.quote(name), timeout, budget)
            budget -= len(data)
            if hashlib.sha256(data).hexdigest() != digest:
                raise BundleError(f"{name} from {base} does not match its hash in {MANIFEST}")
            (work / name).write_bytes(data)
        _write_pages(work, manifest)
        load_bundle(work)
        _replace_dir(work, dest)
    return manifest


def _get(url: str, timeout: float, limit: int) -> bytes:
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise BundleError(f"not an http(s) URL: {url}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            data: bytes = answer.read(limit + 1)
    except OSError as exc:
        raise BundleError(f"could not fetch {url}: {exc}") from None
    if len(data) > limit:
        raise BundleError(f"{url} is larger than the bundle limit")
    return data


# -- the instructions ---------------------------------------------------------------------


def install_command(where: str, trusted_host: str | None = None) -> str:
    trusted = f" --trusted-host {trusted_host}" if trusted_host else ""
    return f"~/mesh-venv/bin/pip install --no-index --find-links {where}{trusted} {PACKAGE}"


def instructions(manifest: Manifest) -> list[str]:
    """The steps for the friend, as plain lines (README.txt and index.html say the same)."""
    targets = ", ".join(manifest.targets)
    return [
        f"mesh-messenger {manifest.version}: install with no internet",
        "",
        f"These files install mesh on: {targets} (Python {manifest.python}).",
        "You need that Python version (python3 --version) and a terminal.",
        "",
        "1. python3 -m venv ~/mesh-venv",
        "2. From this page (replace ADDRESS with the address in your browser bar):",
        "   " + install_command("http://ADDRESS/", "HOST"),
        "   (HOST is ADDRESS without :PORT.) Or, from a copy of this folder:",
        "   " + install_command("FOLDER"),
        "3. ~/mesh-venv/bin/mesh --version",
        "",
        "To pass it on in turn: ~/mesh-venv/bin/mesh share --from http://ADDRESS/",
        "(or --from FOLDER), then ~/mesh-venv/bin/mesh share.",
        "Then compare fingerprints in person before you trust a contact (mesh id).",
    ]


def _write_pages(folder: Path, manifest: Manifest) -> None:
    lines = instructions(manifest)
    (folder / "README.txt").write_text("\n".join(lines) + "\n", "utf-8")
    links = "\n".join(
        f'<li><a href="{html.escape(urllib.parse.quote(n))}">{html.escape(n)}</a></li>'
        for n in sorted(manifest.files)
    )
    body = html.escape("\n".join(lines))
    page = (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>mesh-messenger</title>'
        f"</head><body>\n<pre>{body}</pre>\n<h2>Files</h2>\n<ul>\n{links}\n</ul>\n"
        f'<p><a href="{MANIFEST}">{MANIFEST}</a></p>\n</body></html>\n'
    )
    (folder / "index.html").write_text(page, "utf-8")
    (folder / MANIFEST).write_text(manifest.to_json() + "\n", "utf-8")


# -- serving ------------------------------------------------------------------------------


PAGES = ("index.html", "README.txt", MANIFEST)


class _Handler(http.server.SimpleHTTPRequestHandler):
    """GET/HEAD of the bundle's own files, nothing else (no listing, no other method)."""

    allowed: frozenset[str] = frozenset()
    served: Callable[[str], None] = staticmethod(lambda name: None)

    def send_head(self) -> Any:
        name = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
        name = name or "index.html"
        if name not in self.allowed:
            self.send_error(404)
            return None
        self.path = "/" + urllib.parse.quote(name)
        handle = super().send_head()
        if handle is not None and self.command == "GET":
            self.served(name)
        return handle

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("share: %s", format % args)


class _Server6(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6


def make_server(
    folder: Path, host: str, port: int, served: Callable[[str], None]
) -> http.server.ThreadingHTTPServer:
    """A read-only HTTP server of the checked bundle in `folder` (not started)."""
    manifest = load_bundle(folder)
    handler = type(
        "Handler",
        (_Handler,),
        {"allowed": frozenset([*manifest.files, *PAGES]), "served": staticmethod(served)},
    )

    def factory(*args: Any, **kwargs: Any) -> _Handler:
        made: _Handler = handler(*args, directory=str(folder), **kwargs)
        return made

    server_class = _Server6 if ":" in host else http.server.ThreadingHTTPServer
    server = server_class((host, port), factory)
    server.daemon_threads = True
    return server


def serve_for(server: http.server.ThreadingHTTPServer, seconds: float) -> None:
    """Serve until `seconds` have passed (or KeyboardInterrupt), then close."""
    thread = threading.Thread(target=server.serve_forever, name="mesh-share", daemon=True)
    thread.start()
    try:
        threading.Event().wait(seconds)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def share_urls(host: str, port: int) -> list[str]:
    """The URLs a friend can use: every non-loopback IPv4 address when bound to all."""
    if host not in ("0.0.0.0", ""):
        return [f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"]
    return [f"http://{ip}:{port}/" for ip in lan_ipv4_addresses()]
