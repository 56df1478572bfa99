"""Starting server processes so that they can never outlive the test session.

Three layers make sure a broker or a database is not left running:

1. the owner (fixture or ``with`` block) stops the process explicitly;
2. an ``atexit`` hook stops whatever is still registered when the interpreter exits;
3. on Linux the child gets a parent-death signal (``PR_SET_PDEATHSIG``), so even a
   ``kill -9`` of pytest takes the servers down with it.

Each server runs in its own session/process group: a Ctrl-C in the terminal then reaches only
pytest, which stops the servers in order, and a last-resort ``killpg`` also reaches helpers the
server forked into its group (PostgreSQL's children have groups of their own, but they exit
by themselves when the postmaster dies).

Temporary directories are removed by their owner or at exit; those of a session that was
killed outright are removed by the next session (see :func:`make_workdir`).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

__all__ = ["make_workdir", "remove_workdir", "spawn", "stop_process", "tail_text"]

_PR_SET_PDEATHSIG = 1
_OWNER_FILE = ".kiban-owner"
_live: dict[int, tuple[subprocess.Popen[bytes], signal.Signals]] = {}
_workdirs: set[Path] = set()
_live_lock = threading.Lock()


def _death_signal_hook(sig: signal.Signals) -> Callable[[], None] | None:
    """A ``preexec_fn`` asking the kernel to send ``sig`` to the child when we die.

    Linux only. The kernel ties the setting to the *thread* that forked, so it is used only
    from the main thread, which lives as long as the process.
    """
    if not sys.platform.startswith("linux"):
        return None
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died between fork and prctl
            os.kill(os.getpid(), int(sig))

    return hook


def spawn(
    args: Sequence[str],
    *,
    log_path: Path,
    exit_signal: signal.Signals,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    user: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start a long-running server with stdout and stderr appended to ``log_path``.

    ``exit_signal`` is what the server gets if its owner never stops it: from the ``atexit``
    hook, or from the kernel when this Python process dies. ``user`` runs the child as that
    user (and group of the same name) with no supplementary groups; this needs root.
    """
    with log_path.open("ab") as log:
        proc = subprocess.Popen(  # noqa: S603 - arguments are built by the harness
            list(args),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=None if env is None else dict(env),
            start_new_session=True,
            preexec_fn=_death_signal_hook(exit_signal),
            user=user,
            group=user,
            extra_groups=None if user is None else [],
        )
    with _live_lock:
        _live[proc.pid] = (proc, exit_signal)
    return proc


def stop_process(proc: subprocess.Popen[bytes], sig: signal.Signals, timeout: float) -> None:
    """Send ``sig``, wait up to ``timeout`` seconds, then kill the whole process group.

    The group is killed only while its leader still runs: after the leader is reaped its id
    may be reused, and signalling a reused group could hit an unrelated process.
    """
    try:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    finally:
        with _live_lock:
            _live.pop(proc.pid, None)


def tail_text(path: Path, *, offset: int = 0, lines: int = 40) -> str:
    """The last ``lines`` lines of ``path`` from byte ``offset`` on ("" if there is none)."""
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except FileNotFoundError:
        return ""
    return "\n".join(data.decode("utf-8", errors="replace").splitlines()[-lines:])


def _owner_alive(owner_file: Path) -> bool:
    """False only when the file names a process of this host that no longer exists."""
    try:
        host, pid_text = owner_file.read_text().split()
        pid = int(pid_text)
    except (OSError, ValueError):
        return True  # unreadable, or being written right now: leave the directory alone
    if host != socket.gethostname():
        return True  # another machine or container sharing the directory
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def make_workdir(prefix: str, parent: Path | None = None) -> Path:
    """A fresh temporary directory, removed at interpreter exit if nobody removed it before.

    A session killed with SIGKILL cannot clean up; its directories are recognised by the
    owner file naming a dead process and are removed here, by the next session.
    """
    base = Path(parent if parent is not None else tempfile.gettempdir())
    for stale in base.glob(f"{prefix}*"):
        if not _owner_alive(stale / _OWNER_FILE):
            shutil.rmtree(stale, ignore_errors=True)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    (path / _OWNER_FILE).write_text(f"{socket.gethostname()} {os.getpid()}\n")
    with _live_lock:
        _workdirs.add(path)
    return path


def remove_workdir(path: Path) -> None:
    """Remove a directory made by :func:`make_workdir` (its processes must be stopped)."""
    shutil.rmtree(path, ignore_errors=True)
    with _live_lock:
        _workdirs.discard(path)


@atexit.register
def _clean_leftovers() -> None:
    """Processes first, so that no server writes into a directory being removed."""
    with _live_lock:
        leftovers = list(_live.values())
    for proc, sig in leftovers:
        stop_process(proc, sig, timeout=15.0)
    with _live_lock:
        dirs = list(_workdirs)
    for path in dirs:
        remove_workdir(path)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of a process and all its descendants (uvicorn workers,
    multiprocessing children), from Linux /proc; benches divide it by the work done."""
    ticks = os.sysconf("SC_CLK_TCK")
    total, stack = 0.0, [pid]
    while stack:
        current = stack.pop()
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
            for task in Path(f"/proc/{current}/task").iterdir():
                stack.extend(int(child) for child in (task / "children").read_text().split())
    return total
