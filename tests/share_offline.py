"""Run inside a fresh network namespace by test_share: a friend with no internet installs
mesh from `mesh share`, passes it on with `mesh share --from URL --to DIR`, and a third
person installs from that folder. Prints one line per step; exits non-zero on failure.

Usage: python share_offline.py HOME WORKDIR HOST
"""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
from pathlib import Path

TIMEOUT = 240


def offline_env() -> dict[str, str]:
    """No pip configuration at all: no index, no find-links, no mirror of this machine."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "MESH_"))}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.pop("VIRTUAL_ENV", None)
    return env


def run(*args: str) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=TIMEOUT, env=offline_env())
    if done.returncode != 0:
        sys.exit(f"{args} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def first_line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if not selector.select(30):
            sys.exit("mesh share printed nothing")
    return proc.stdout.readline().strip()


def install(venv: Path, where: str, *extra: str) -> None:
    run(sys.executable, "-m", "venv", str(venv))
    pip = str(venv / "bin" / "pip")
    run(pip, "install", "--no-index", "--find-links", where, *extra, "mesh-messenger")
    print("installed:", run(str(venv / "bin" / "mesh"), "--version").strip(), flush=True)


def main() -> None:
    home, work, host = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    server = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "--home", str(home), "share",
         "--host", host, "--port", "0", "--minutes", "3"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=offline_env(),
    )  # fmt: skip
    try:
        line = first_line(server)
        if not line.startswith("serving on http://"):
            sys.exit(f"unexpected first line: {line!r}")
        url = line.removeprefix("serving on ")
        print("url:", url, flush=True)
        first = work / "friend"
        install(first, url, "--trusted-host", host)
        mesh = str(first / "bin" / "mesh")
        # The friend's copy was installed from wheels (no source): it passes the bundle on.
        run(mesh, "--home", str(work / "friend-home"), "share", "--from", url)
        run(mesh, "--home", str(work / "friend-home"), "share", "--to", str(work / "usb"))
        print("passed on", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
    install(work / "third", str(work / "usb"))


if __name__ == "__main__":
    main()
