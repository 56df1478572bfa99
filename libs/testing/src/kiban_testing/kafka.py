"""A real single-node Apache Kafka broker (KRaft) for tests.

Why a real broker: the services' behaviour around Kafka (consumer groups, offsets, transactions,
a broker that goes away and comes back) is exactly what fakes get wrong. The broker runs from
the jars Maven resolves for ``tools/kafka/pom.xml`` on the machine's JDK, so no Docker and no
Kafka distribution download are needed; the jars are cached between runs.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from kiban_testing._errors import HarnessError
from kiban_testing._install import require_command
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

__all__ = ["KAFKA_VERSION", "KafkaBroker", "KafkaServer", "find_kafka_pom", "kafka_jars"]

KAFKA_VERSION = "4.1.1"
_READY_LINE = "Kafka Server started"
_STACK_FRAME = re.compile(r"\s+(at |\.\.\. \d+ more)")
_MARKER = ".complete"
_DOWNLOAD_TIMEOUT_S = 1800.0
_JAVA_HINT = "Install a Java 17+ runtime (Debian: apt-get install openjdk-17-jre-headless)."
_MVN_HINT = "Install Apache Maven 3 (Debian: apt-get install maven)."

_LOG4J2 = """\
# Written by kiban_testing: warnings only, plus the line that says the broker is up.
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.stdout.ref = STDOUT
logger.raftserver.name = kafka.server.KafkaRaftServer
logger.raftserver.level = info
"""


@runtime_checkable
class KafkaServer(Protocol):
    """What tests may rely on, whether the broker is ours or an external one."""

    @property
    def bootstrap(self) -> str: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def restart(self) -> None: ...


def find_kafka_pom() -> Path:
    """Locate ``tools/kafka/pom.xml``: ``$KIBAN_KAFKA_POM``, else above this file or the cwd."""
    explicit = os.environ.get("KIBAN_KAFKA_POM")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise HarnessError(f"KIBAN_KAFKA_POM={explicit} is not a file")
        return path
    starts = [Path(__file__).resolve().parent, Path.cwd().resolve()]
    for start in starts:
        for base in (start, *start.parents):
            candidate = base / "tools" / "kafka" / "pom.xml"
            if candidate.is_file():
                return candidate
    raise HarnessError(
        "tools/kafka/pom.xml not found above the kiban_testing package or the working "
        "directory; run from the Kiban workspace or set KIBAN_KAFKA_POM"
    )


def _default_cache_dir() -> Path:
    root = os.environ.get("KIBAN_CACHE_DIR")
    base = Path(root) if root else Path.home() / ".cache" / "kiban"
    return base / f"kafka-libs-{KAFKA_VERSION}"


def _is_complete(directory: Path, digest: str) -> bool:
    try:
        return (directory / _MARKER).read_text().strip() == digest
    except OSError:
        return False


def kafka_jars(cache_dir: Path | None = None) -> Path:
    """Return a directory holding every jar the broker needs, downloading them if needed.

    The directory (default ``$KIBAN_CACHE_DIR/kafka-libs-4.1.1``, else
    ``~/.cache/kiban/kafka-libs-4.1.1``) survives between runs. A marker holding the pom's
    hash is written only after a complete download, so an interrupted download, or a pom
    that changed since, is redone from scratch. A lock file serialises concurrent sessions.
    """
    target = cache_dir if cache_dir is not None else _default_cache_dir()
    pom = find_kafka_pom()
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()
    if _is_complete(target, digest):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / f".{target.name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        if _is_complete(target, digest):  # another process finished while we waited
            return target
        require_command("java", package="openjdk-17-jre-headless", hint=_JAVA_HINT)
        mvn = require_command("mvn", package="maven", hint=_MVN_HINT)
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir()
        command = [
            mvn, "-B", "-q", "-f", str(pom), "dependency:copy-dependencies",
            "-DincludeScope=runtime", f"-DoutputDirectory={target}",
        ]  # fmt: skip
        result = subprocess.run(  # noqa: S603 - fixed arguments
            command,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=_DOWNLOAD_TIMEOUT_S,
            check=False,
        )
        jars = list(target.glob("*.jar"))
        if result.returncode != 0 or not jars:
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-40:])
            raise HarnessError(
                f"resolving the Kafka jars with Maven failed (exit {result.returncode}, "
                f"{len(jars)} jars):\n$ {' '.join(command)}\n{tail}"
            )
        (target / _MARKER).write_text(digest + "\n")
    return target


def _cluster_id() -> str:
    """A random Kafka cluster id: a UUID in unpadded URL-safe base64, 22 characters.

    Ids starting with '-' are avoided because the command line would read them as options.
    """
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


class _PortTakenError(Exception):
    """The broker lost the race for a port picked by free_port(); try other ports."""


class KafkaBroker:
    """A single-node KRaft broker (broker and controller in one JVM) on 127.0.0.1.

    The port, controller port and data directory are chosen on the first :meth:`start` and
    kept until :meth:`close`, so :meth:`stop` then :meth:`start` (or :meth:`restart`) brings
    back the same broker, with its topics and offsets, at the same address: clients that
    were connected simply reconnect. Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        *,
        jars_dir: Path | None = None,
        start_timeout: float = 90.0,
        stop_timeout: float = 30.0,
        max_heap: str = "1g",
    ) -> None:
        self._jars_dir = jars_dir
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._max_heap = max_heap
        self._workdir: Path | None = None
        self._port = 0
        self._controller_port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._run_offset = 0
        self._closed = False

    # -- addresses and state -------------------------------------------------------------

    @property
    def port(self) -> int:
        """The PLAINTEXT listener's port (fixed from the first start on)."""
        self._require_started()
        return self._port

    @property
    def controller_port(self) -> int:
        """The KRaft controller listener's port."""
        self._require_started()
        return self._controller_port

    @property
    def bootstrap(self) -> str:
        """``bootstrap_servers`` for clients: ``127.0.0.1:PORT``."""
        return f"127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        """The broker's ``log.dirs``: kept across stop/start, removed by close()."""
        return self._require_started() / "data"

    @property
    def log_path(self) -> Path:
        """File collecting the broker's console output over all its runs."""
        return self._require_started() / "kafka.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The broker JVM process id while it runs here (None for an external one): benches
        read its CPU time."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the broker's output, for error messages."""
        if self._workdir is None:
            return ""
        return tail_text(self._workdir / "kafka.log", lines=lines)

    def _require_started(self) -> Path:
        if self._workdir is None:
            raise HarnessError("the Kafka broker has not been started")
        return self._workdir

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the broker and wait until it serves; a no-op if it is running."""
        if self._closed:
            raise HarnessError("this KafkaBroker was closed; create a new one")
        if self.running:
            return
        jars = self._jars_dir if self._jars_dir is not None else kafka_jars()
        if not any(jars.glob("*.jar")):
            raise HarnessError(f"no jars in {jars}; kafka_jars() provides them")
        java = require_command("java", package="openjdk-17-jre-headless", hint=_JAVA_HINT)
        if self._workdir is not None:  # a restart: same ports, same data
            self._launch(java, jars)
            return
        for _attempt in range(3):
            self._workdir = make_workdir("kiban-kafka-")
            try:
                self._prepare(java, jars)
                self._launch(java, jars)
            except _PortTakenError:
                self._discard_workdir()
                continue
            except BaseException:
                self._discard_workdir()
                raise
            return
        raise HarnessError("the Kafka broker could not bind a free port after 3 attempts")

    def stop(self) -> None:
        """Stop the broker cleanly (SIGTERM), keeping its data and ports for a restart."""
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process(proc, signal.SIGTERM, self._stop_timeout)

    def restart(self) -> None:
        """Stop then start again at the same address with the same data."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the broker and delete its directory; the object cannot be started again."""
        self._closed = True
        self.stop()
        self._discard_workdir()

    def __enter__(self) -> KafkaBroker:
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
        where = self.bootstrap if self._workdir is not None else "not started"
        return f"<KafkaBroker {where} running={self.running}>"

    # -- internals -----------------------------------------------------------------------

    def _discard_workdir(self) -> None:
        self.stop()
        if self._workdir is not None:
            remove_workdir(self._workdir)
        self._workdir = None

    def _prepare(self, java: str, jars: Path) -> None:
        """Pick ports, write the configuration and format the storage (first start only)."""
        workdir = self._require_started()
        self._port = free_port()
        self._controller_port = free_port()
        while self._controller_port == self._port:
            self._controller_port = free_port()
        (workdir / "logs").mkdir()
        (workdir / "log4j2.properties").write_text(_LOG4J2)
        (workdir / "server.properties").write_text(self._server_properties(workdir))
        command = [
            java, "-Xmx256m", "-cp", f"{jars}/*",
            f"-Dlog4j2.configurationFile={workdir / 'log4j2.properties'}",
            "kafka.tools.StorageTool", "format", "--standalone",
            "-t", _cluster_id(), "-c", str(workdir / "server.properties"),
        ]  # fmt: skip
        result = subprocess.run(  # noqa: S603 - fixed arguments
            command,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=self._start_timeout,
            check=False,
        )
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-40:])
            raise HarnessError(f"formatting the Kafka storage failed:\n{tail}")

    def _server_properties(self, workdir: Path) -> str:
        plain = f"127.0.0.1:{self._port}"
        ctrl = f"127.0.0.1:{self._controller_port}"
        settings = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": ctrl,
            "listeners": f"PLAINTEXT://{plain},CONTROLLER://{ctrl}",
            "advertised.listeners": f"PLAINTEXT://{plain},CONTROLLER://{ctrl}",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(workdir / "data"),
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "num.partitions": "1",
            "num.network.threads": "2",
            "num.io.threads": "2",
            "auto.create.topics.enable": "true",
        }
        lines = ["# Written by kiban_testing for a single-node test broker."]
        lines += [f"{key}={value}" for key, value in settings.items()]
        return "\n".join(lines) + "\n"

    def _launch(self, java: str, jars: Path) -> None:
        """Run the broker and wait for its ready line, its death or the timeout."""
        workdir = self._require_started()
        log_path = workdir / "kafka.log"
        self._run_offset = log_path.stat().st_size if log_path.exists() else 0
        command = [
            java, "-Xms256m", f"-Xmx{self._max_heap}", "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1", "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={workdir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={workdir / 'logs'}",
            "-cp", f"{jars}/*", "kafka.Kafka", str(workdir / "server.properties"),
        ]  # fmt: skip
        self._proc = spawn(command, log_path=log_path, exit_signal=signal.SIGTERM, cwd=workdir)
        deadline = time.monotonic() + self._start_timeout
        while True:
            output = tail_text(log_path, offset=self._run_offset, lines=10_000)
            if _READY_LINE in output:
                return
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self.stop()  # reaped already; this only forgets it
                if "Address already in use" in output and self._run_offset == 0:
                    raise _PortTakenError
                raise HarnessError(
                    f"the Kafka broker exited with code {code} before it was ready; "
                    f"its output ends with:\n{self._run_tail()}"
                )
            if time.monotonic() > deadline:
                tail = self._run_tail()
                self.stop()
                raise HarnessError(
                    f"the Kafka broker was not ready after {self._start_timeout:.0f} s; "
                    f"its output ends with:\n{tail}"
                )
            time.sleep(0.1)

    def _run_tail(self) -> str:
        """This run's output without Java stack frames, which would crowd out the causes."""
        log_path = self._require_started() / "kafka.log"
        output = tail_text(log_path, offset=self._run_offset, lines=10_000)
        kept = [line for line in output.splitlines() if not _STACK_FRAME.match(line)]
        return "\n".join(kept[-40:]) or "(no output)"
