"""A real, throwaway PostgreSQL cluster for tests.

Why real: SQL semantics (constraints, transactions, locking, JSON operators) are what the
services rely on, and an in-memory stand-in would test something else. The cluster is created
with the Debian packages' ``initdb`` in a temporary directory, tuned for speed over durability
(no fsync), listens only on 127.0.0.1, and is deleted at the end. Databases are created with
the ``psql`` client, so the harness itself depends on no Python database driver.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable
from urllib.parse import urlsplit

from kiban_testing._errors import HarnessError
from kiban_testing._install import ensure_debian_packages
from kiban_testing._ports import free_port
from kiban_testing._process import (
    make_workdir,
    remove_workdir,
    spawn,
    stop_process,
    tail_text,
)

if TYPE_CHECKING:
    from types import TracebackType

__all__ = [
    "ExternalPostgres",
    "PostgresCluster",
    "PostgresServer",
    "database_url",
    "find_postgres_bin",
]

_DEBIAN_PG_ROOT = Path("/usr/lib/postgresql")
_CREATECLUSTER_CONF = Path("/etc/postgresql-common/createcluster.conf")
_PG_HINT = (
    "Install the PostgreSQL server (Debian: apt-get install postgresql), or set "
    "KIBAN_POSTGRES_BIN to a directory holding initdb, postgres, pg_isready and psql, or set "
    "KIBAN_TEST_DATABASE_URL to use an existing server."
)
_NAME = re.compile(r"[a-z0-9_]{1,63}")
_SOCKET_PATH_MAX = 100  # sun_path holds 108 bytes; leave room for "/.s.PGSQL.NNNNN"
_PSQL_TIMEOUT_S = 60.0


@runtime_checkable
class PostgresServer(Protocol):
    """What tests may rely on, whether the server is ours or an external one."""

    @property
    def url(self) -> str: ...

    def create_database(self, name: str) -> str: ...

    def drop_database(self, name: str) -> None: ...


# -- finding binaries --------------------------------------------------------------------------


def _newest_debian_bin() -> Path | None:
    """The ``bin`` directory of the newest PostgreSQL major version Debian installed."""
    found: list[tuple[int, Path]] = []
    if _DEBIAN_PG_ROOT.is_dir():
        for version_dir in _DEBIAN_PG_ROOT.iterdir():
            bin_dir = version_dir / "bin"
            if version_dir.name.isdigit() and (bin_dir / "postgres").is_file():
                found.append((int(version_dir.name), bin_dir))
    return max(found)[1] if found else None


def _no_main_cluster() -> None:
    """Tell postgresql-common not to create (and start) a system cluster when installed."""
    _CREATECLUSTER_CONF.parent.mkdir(parents=True, exist_ok=True)
    text = _CREATECLUSTER_CONF.read_text() if _CREATECLUSTER_CONF.exists() else ""
    kept = [line for line in text.splitlines() if not line.startswith("create_main_cluster")]
    _CREATECLUSTER_CONF.write_text("\n".join([*kept, "create_main_cluster = false"]) + "\n")


def find_postgres_bin() -> Path:
    """Directory of the PostgreSQL server binaries, installing Debian's package if allowed.

    ``$KIBAN_POSTGRES_BIN`` wins; otherwise the newest ``/usr/lib/postgresql/*/bin``.
    """
    explicit = os.environ.get("KIBAN_POSTGRES_BIN")
    if explicit:
        bin_dir = Path(explicit)
        if not (bin_dir / "initdb").is_file():
            raise HarnessError(f"KIBAN_POSTGRES_BIN={explicit} holds no initdb")
        return bin_dir
    found = _newest_debian_bin()
    if found is None:
        ensure_debian_packages(
            ["postgresql"],
            missing="PostgreSQL server (/usr/lib/postgresql/*/bin)",
            hint=_PG_HINT,
            before_install=_no_main_cluster,
        )
        found = _newest_debian_bin()
        if found is None:
            raise HarnessError("installed postgresql but found no /usr/lib/postgresql/*/bin")
    return found


def find_psql() -> str:
    """The ``psql`` client: on PATH, else next to the newest server, else installed."""
    found = shutil.which("psql")
    if found is not None:
        return found
    bin_dir = _newest_debian_bin()
    if bin_dir is not None and (bin_dir / "psql").is_file():
        return str(bin_dir / "psql")
    ensure_debian_packages(
        ["postgresql-client"],
        missing="the psql client",
        hint="Install it (Debian: apt-get install postgresql-client).",
    )
    found = shutil.which("psql")
    if found is None:
        raise HarnessError("installed postgresql-client but psql is still not on PATH")
    return found


# -- databases ---------------------------------------------------------------------------------


def _check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError(f"database name {name!r} must be 1-63 characters of [a-z0-9_]")
    return name


def database_url(server_url: str, name: str) -> str:
    """``server_url`` with its database replaced by ``name`` (user, host, query kept)."""
    return urlsplit(server_url)._replace(path="/" + _check_name(name)).geturl()


def _run_psql(psql: str, admin_url: str, *statements: str) -> None:
    """Run each statement in its own transaction (CREATE DATABASE refuses to be in one)."""
    command = [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", admin_url]
    for statement in statements:
        command += ["-c", statement]
    env = {**os.environ, "PGCONNECT_TIMEOUT": os.environ.get("PGCONNECT_TIMEOUT", "10")}
    result = subprocess.run(  # noqa: S603 - fixed arguments, validated names
        command,
        env=env,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=_PSQL_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0:
        raise HarnessError(
            f"psql failed ({result.returncode}) running {'; '.join(statements)}:\n"
            f"{(result.stdout + result.stderr).strip()}"
        )


def _create(psql: str, admin_url: str, name: str) -> str:
    _check_name(name)
    _run_psql(
        psql,
        admin_url,
        f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
        f'CREATE DATABASE "{name}"',
    )
    return database_url(admin_url, name)


def _drop(psql: str, admin_url: str, name: str) -> None:
    _run_psql(psql, admin_url, f'DROP DATABASE IF EXISTS "{_check_name(name)}" WITH (FORCE)')


class ExternalPostgres:
    """A server someone else runs (``KIBAN_TEST_DATABASE_URL``); we only add databases.

    ``url`` must name a role allowed to create databases; new databases get the same user,
    password, host and options with another database name.
    """

    def __init__(self, url: str) -> None:
        self._url = url
        self._psql: str | None = None

    @property
    def url(self) -> str:
        return self._url

    def _client(self) -> str:
        if self._psql is None:
            self._psql = find_psql()
        return self._psql

    def create_database(self, name: str) -> str:
        """Create database ``name`` (dropping any previous one) and return its URL."""
        return _create(self._client(), self._url, name)

    def drop_database(self, name: str) -> None:
        _drop(self._client(), self._url, name)

    def __repr__(self) -> str:
        parts = urlsplit(self._url)
        return f"<ExternalPostgres {parts.hostname}:{parts.port}>"


# -- our own cluster ---------------------------------------------------------------------------


def _others_can_enter(path: Path) -> bool:
    return all(p.stat().st_mode & 0o001 for p in (path, *path.parents))


class PostgresCluster:
    """A private PostgreSQL cluster in a temporary directory, on a free port of 127.0.0.1.

    Superuser ``postgres`` with trust authentication, so URLs carry no password. As root the
    server runs as the ``postgres`` system user (PostgreSQL refuses to run as root). The
    port and data survive :meth:`stop`/:meth:`start`; :meth:`close` deletes everything.

    With ``url`` (for instance ``$KIBAN_TEST_DATABASE_URL``) no server is started: the object
    stands for that existing server and only creates databases on it, so scripts can write
    ``PostgresCluster(url=os.environ.get(...))`` and handle both cases alike.

    ``server_settings`` are passed to the server as ``-c name=value`` (benches size its buffer
    pool as production would: ``{"shared_buffers": "2GB"}``); an external server keeps its own.
    """

    def __init__(
        self,
        *,
        url: str | None = None,
        bin_dir: Path | None = None,
        start_timeout: float = 60.0,
        stop_timeout: float = 30.0,
        server_settings: Mapping[str, str] | None = None,
    ) -> None:
        self._external = ExternalPostgres(url) if url else None
        self._server_settings = dict(server_settings or {})
        self._bin_dir = bin_dir
        self._bins_checked = False
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._workdir: Path | None = None
        self._port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._run_offset = 0
        self._closed = False

    @property
    def port(self) -> int:
        if self._external is not None:
            return urlsplit(self._external.url).port or 5432
        self._require_started()
        return self._port

    @property
    def url(self) -> str:
        """URL of the ``postgres`` maintenance database, as superuser ``postgres``."""
        if self._external is not None:
            return self._external.url
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def data_dir(self) -> Path:
        return self._require_started() / "data"

    @property
    def running(self) -> bool:
        if self._external is not None:
            return not self._closed
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs here (None for an external one): benches
        read its CPU time, its backends' included (they are its children)."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the server's output, for error messages."""
        if self._workdir is None:
            return ""
        return tail_text(self._workdir / "postgres.log", lines=lines)

    def create_database(self, name: str) -> str:
        """Create an empty database ``name`` (dropping any previous one); return its URL."""
        if self._external is not None:
            return self._external.create_database(name)
        return _create(self._psql(), self.url, name)

    def drop_database(self, name: str) -> None:
        if self._external is not None:
            self._external.drop_database(name)
            return
        _drop(self._psql(), self.url, name)

    def _psql(self) -> str:
        if not self.running:
            raise HarnessError("the PostgreSQL cluster is not running")
        return str(self._bins() / "psql")

    def _require_started(self) -> Path:
        if self._workdir is None:
            raise HarnessError("the PostgreSQL cluster has not been started")
        return self._workdir

    def _bins(self) -> Path:
        if self._bin_dir is None:
            self._bin_dir = find_postgres_bin()
        if not self._bins_checked:
            tools = ("initdb", "postgres", "pg_isready", "psql")
            missing = [tool for tool in tools if not (self._bin_dir / tool).is_file()]
            if missing:
                raise HarnessError(f"{self._bin_dir} lacks {', '.join(missing)}. {_PG_HINT}")
            self._bins_checked = True
        return self._bin_dir

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Create the cluster on first use, start it and wait until it accepts connections."""
        if self._closed:
            raise HarnessError("this PostgresCluster was closed; create a new one")
        if self._external is not None or self.running:
            return
        user = self._server_user()
        if self._workdir is not None:  # a restart: same port, same data
            self._launch(user)
            return
        try:
            self._workdir = make_workdir("kiban-pg-", self._workdir_parent(user))
            self._initdb(user)
            for _attempt in range(3):
                self._port = free_port()
                if self._launch(user):
                    return
            raise HarnessError("PostgreSQL could not bind a free port after 3 attempts")
        except BaseException:
            self._discard_workdir()
            raise

    def stop(self) -> None:
        """Fast shutdown (SIGINT): open sessions are ended, data is kept."""
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process(proc, signal.SIGINT, self._stop_timeout)

    def close(self) -> None:
        """Stop the server and delete the cluster; the object cannot be started again."""
        self._closed = True
        self._discard_workdir()

    def __enter__(self) -> PostgresCluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._external is not None:
            return f"<PostgresCluster external {self._external!r}>"
        where = f"127.0.0.1:{self._port}" if self._workdir is not None else "not started"
        return f"<PostgresCluster {where} running={self.running}>"

    # -- internals -----------------------------------------------------------------------

    def _discard_workdir(self) -> None:
        self.stop()
        if self._workdir is not None:
            remove_workdir(self._workdir)
        self._workdir = None

    @staticmethod
    def _server_user() -> str | None:
        """None to run as ourselves; as root, the unprivileged ``postgres`` user."""
        if os.geteuid() != 0:
            return None
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise HarnessError(
                "running as root, but PostgreSQL refuses root and there is no `postgres` "
                "user to run it as; install Debian's postgresql package (it creates the "
                "user) or run the tests as an unprivileged user"
            ) from None
        return "postgres"

    @staticmethod
    def _workdir_parent(user: str | None) -> Path | None:
        """As root the temp dir must be reachable by ``postgres``; fall back to /tmp."""
        if user is None:
            return None
        default = Path(tempfile.gettempdir())
        return default if _others_can_enter(default) else Path("/tmp")  # noqa: S108

    def _initdb(self, user: str | None) -> None:
        workdir = self._require_started()
        if user is not None:
            shutil.chown(workdir, user, user)
        command = [
            str(self._bins() / "initdb"), "-D", str(workdir / "data"), "-U", "postgres",
            "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync",
        ]  # fmt: skip
        result = subprocess.run(  # noqa: S603 - fixed arguments
            command,
            cwd=workdir,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=self._start_timeout,
            check=False,
            user=user,
            group=user,
            extra_groups=None if user is None else [],
        )
        if result.returncode != 0:
            raise HarnessError(
                f"initdb failed ({result.returncode}):\n{(result.stdout + result.stderr).strip()}"
            )

    def _launch(self, user: str | None) -> bool:
        """Start the server; False if the port was taken on a first start (try another)."""
        workdir = self._require_started()
        log_path = workdir / "postgres.log"
        first_run = not log_path.exists()
        self._run_offset = 0 if first_run else log_path.stat().st_size
        socket_dir = str(workdir) if len(str(workdir)) < _SOCKET_PATH_MAX else ""
        command = [
            str(self._bins() / "postgres"), "-D", str(workdir / "data"),
            "-p", str(self._port), "-k", socket_dir,
            "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
            "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
            "-c", "max_connections=200",
        ]  # fmt: skip
        for name, value in self._server_settings.items():
            command += ["-c", f"{name}={value}"]
        self._proc = spawn(
            command, log_path=log_path, exit_signal=signal.SIGQUIT, cwd=workdir, user=user
        )
        deadline = time.monotonic() + self._start_timeout
        while True:
            if self._ready():
                return True
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self.stop()  # reaped already; this only forgets it
                output = tail_text(log_path, offset=self._run_offset)
                if first_run and "Address already in use" in output:
                    log_path.unlink()
                    return False
                raise HarnessError(
                    f"PostgreSQL exited with code {code} before accepting connections; "
                    f"its output ends with:\n{output or '(no output)'}"
                )
            if time.monotonic() > deadline:
                output = tail_text(log_path, offset=self._run_offset)
                self.stop()
                raise HarnessError(
                    f"PostgreSQL did not accept connections within {self._start_timeout:.0f} s;"
                    f" its output ends with:\n{output or '(no output)'}"
                )
            time.sleep(0.1)

    def _ready(self) -> bool:
        result = subprocess.run(  # noqa: S603 - fixed arguments
            [str(self._bins() / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self._port),
             "-t", "2"],
            capture_output=True,
            timeout=10,
            check=False,
        )  # fmt: skip
        return result.returncode == 0
