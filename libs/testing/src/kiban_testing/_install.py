"""Installing missing system packages on a throwaway CI machine.

The harness uses the machine's JDK, Maven and PostgreSQL. A developer machine has them; a fresh
CI container running as root often does not, and there installing the Debian packages is the
simplest way to get them. Anywhere else (not root, no apt-get) the harness refuses to guess and
stops with a message naming what is missing and how to get it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from typing import TYPE_CHECKING

from kiban_testing._errors import HarnessError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["can_install_packages", "ensure_debian_packages", "require_command"]

_APT_TIMEOUT_S = 1800.0
_apt_lock = threading.Lock()
_apt_updated = False


def can_install_packages() -> bool:
    """True when this process may install Debian packages itself (root with apt-get)."""
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def _apt(*args: str) -> None:
    # Keep any configuration written beforehand (e.g. createcluster.conf) without asking.
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "UCF_FORCE_CONFFOLD": "1"}
    result = subprocess.run(  # noqa: S603 - fixed command, arguments from this module
        ["apt-get", *args],  # noqa: S607 - apt-get is looked up on PATH on purpose
        env=env,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=_APT_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
        raise HarnessError(f"apt-get {' '.join(args)} failed ({result.returncode}):\n{tail}")


def ensure_debian_packages(
    packages: Sequence[str],
    *,
    missing: str,
    hint: str,
    before_install: Callable[[], None] | None = None,
) -> None:
    """Install ``packages`` with apt-get, or raise :class:`HarnessError` if we may not.

    ``missing`` names what the caller could not find and ``hint`` says how a human gets it;
    both end up in the error. ``apt-get update`` runs at most once per process.
    ``before_install`` runs right before the install (for configuration such as telling
    postgresql-common not to create a default cluster).
    """
    global _apt_updated  # one update per process, shared by all callers
    if not can_install_packages():
        raise HarnessError(
            f"{missing} not found, and this process cannot install it (needs root and apt-get). "
            f"{hint}"
        )
    with _apt_lock:
        if not _apt_updated:
            _apt("update")
            _apt_updated = True
        if before_install is not None:
            before_install()
        _apt(
            "install", "-y", "--no-install-recommends",
            "-o", "Dpkg::Options::=--force-confold", *packages,
        )  # fmt: skip


def require_command(name: str, *, package: str, hint: str) -> str:
    """Return the path of executable ``name``, installing Debian ``package`` if needed."""
    found = shutil.which(name)
    if found is None:
        ensure_debian_packages([package], missing=f"`{name}`", hint=hint)
        found = shutil.which(name)
        if found is None:
            raise HarnessError(f"installed {package} but `{name}` is still not on PATH")
    return found
