"""The six services as separate processes, configured the way an SRE configures them.

Each service runs as `kiban serve <service>` (the production command; the container's
entrypoint) with settings only from `KIBAN_*` environment variables, the same ones the Helm
chart sets (`deploy/helm/kiban/templates/_helpers.tpl`): its own PostgreSQL database, the real
Kafka broker, a free loopback port, the JWKS and key files written to disk as
`deploy/dev-secrets.sh` writes them (separate field keys per zone, the sealing private key only
for the core zone, the shared dataset file store as `KIBAN_FILES_DIR`). Migrations run first
with `kiban migrate <service>`, as the chart's hook Job does.

Test-only additions, each named where it is set: faster idle polling (outbox relay, build
queue) and the consumer groups started at the end of topics other tests of the session filled.
Processes are always stopped (SIGTERM, then SIGKILL of the group after a timeout); the harness's
process helpers also stop them at interpreter exit and when pytest dies.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace, TracebackType

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kiban_cli.services import SERVICES
from kiban_common.crypto import SealingKeyPair
from kiban_common.devstate import DEV_ISSUER, dev_issuer
from kiban_testing import free_port
from kiban_testing._process import spawn, stop_process, tail_text

NAMES = list(SERVICES)
HOST = "127.0.0.1"
MIGRATE_TIMEOUT = 120.0
STOP_TIMEOUT = 10.0
# Only the outbox relay and the build queue are polled on an idle timer; the rest is pushed.
FAST_POLLING = {
    "KIBAN_OUTBOX__POLL_INTERVAL_MS": "50",  # default 200
}
ANONYMIZER_FAST_POLLING = {"KIBAN_BUILD__POLL_INTERVAL_MS": "100"}  # default 500


class PlatformFailed(AssertionError):
    """A process did not migrate, start or become ready; the message carries its log's tail."""


def kiban_command() -> list[str]:
    """`kiban`, the console script of this environment (what the image's entrypoint runs)."""
    script = Path(sys.executable).with_name("kiban")
    return [str(script)] if script.exists() else [sys.executable, "-m", "kiban_cli.main"]


def _bytecode_cache() -> Path:
    """Compiled modules for the child processes, kept between runs. Every `kiban` process
    imports all six services (pandas, pyarrow, FastAPI, ...); without cached bytecode (this
    machine sets PYTHONDONTWRITEBYTECODE) each start compiles them again, ~3x the CPU. A
    container image ships its bytecode, so this only makes the test start like production."""
    root = os.environ.get("KIBAN_CACHE_DIR") or str(Path.home() / ".cache" / "kiban")
    path = Path(root) / f"pycache-{sys.version_info.major}.{sys.version_info.minor}"
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class Secrets:
    """Files an SRE mounts from secrets (as `deploy/dev-secrets.sh` creates them)."""

    issuer_state: Path  # the development issuer's key: mints the test's tokens
    jwks: Path
    core_keys: Path
    info_keys: Path
    sealing_private: Path
    sealing_public: Path
    signing_key: Path  # release manifests


def write_secrets(root: Path) -> Secrets:
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o700)

    def field_keys() -> dict[str, object]:
        def b64() -> str:
            return base64.b64encode(secrets.token_bytes(32)).decode()

        return {"keys": {"k1": b64()}, "active_key_id": "k1", "index_key": b64()}

    core_keys, info_keys = root / "core-keys.json", root / "info-keys.json"
    core_keys.write_text(json.dumps(field_keys()))
    info_keys.write_text(json.dumps(field_keys()))
    pair = SealingKeyPair.generate()
    private, public = root / "private.pem", root / "public.pem"
    private.write_bytes(pair.private_pem())
    public.write_bytes(pair.public_pem())
    issuer_state = root / "issuer"
    issuer = dev_issuer(issuer_state)
    jwks = root / "jwks.json"
    jwks.write_text(json.dumps(issuer.jwks()))
    signing = root / "release-signing.pem"
    signing.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    for path in (core_keys, info_keys, private, signing):
        path.chmod(0o600)
    return Secrets(issuer_state, jwks, core_keys, info_keys, private, public, signing)


def service_env(
    name: str,
    *,
    port: int,
    database_url: str,
    kafka_bootstrap: str,
    secrets_: Secrets,
    files_dir: Path,
    state_dir: Path,
) -> dict[str, str]:
    """The `KIBAN_*` variables of one service, as the chart's `kiban.env` template sets them
    (host and networks on loopback instead of the pod network)."""
    zone = SERVICES[name].definition.zone.value
    env = {
        "KIBAN_ZONE": zone,
        "KIBAN_BUS": "kafka",
        "KIBAN_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "KIBAN_KAFKA__SECURITY_PROTOCOL": "PLAINTEXT",
        "KIBAN_DATABASE_URL": database_url,
        "KIBAN_HTTP__HOST": HOST,
        "KIBAN_HTTP__PORT": str(port),
        "KIBAN_STATE_DIR": str(state_dir),
        "KIBAN_AUTH__ISSUER": DEV_ISSUER,
        "KIBAN_AUTH__JWKS_FILE": str(secrets_.jwks),
        "KIBAN_CRYPTO__KEYS_FILE": str(
            secrets_.core_keys if zone == "core" else secrets_.info_keys
        ),
        "KIBAN_CRYPTO__SEALING_PUBLIC_KEY_FILE": str(secrets_.sealing_public),
        "KIBAN_TELEMETRY__EXPORTER": "none",
        **FAST_POLLING,
    }
    if zone == "core":
        env["KIBAN_CRYPTO__SEALING_PRIVATE_KEY_FILE"] = str(secrets_.sealing_private)
        env["KIBAN_ZONE_GUARD__ALLOWED_NETWORKS"] = json.dumps(["127.0.0.0/8"])
    if name in ("anonymizer", "release"):
        env["KIBAN_FILES_DIR"] = str(files_dir)
    if name == "anonymizer":
        env.update(ANONYMIZER_FAST_POLLING)
    if name == "release":
        env["KIBAN_RELEASE__SIGNING_KEY_FILE"] = str(secrets_.signing_key)
    return env


def _base_env() -> dict[str, str]:
    """A container's environment: no inherited `KIBAN_*`, no test-runner variables."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TZ")}
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPYCACHEPREFIX"] = str(_bytecode_cache())
    return env


@dataclass
class Proc:
    name: str
    port: int
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def tail(self, lines: int = 30) -> str:
        return tail_text(self.log, lines=lines)


@dataclass
class SixServices:
    """`with SixServices(...) as six:` writes the secrets, migrates and starts the six; leaving
    the block stops every process, also when the block raised."""

    root: Path
    kafka_bootstrap: str
    database_urls: dict[str, str]
    procs: dict[str, Proc] = field(default_factory=dict)
    secrets: Secrets | None = None

    def __post_init__(self) -> None:
        self.files_dir = self.root / "files"  # the shared file store (a PVC in the chart)
        self.logs = self.root / "logs"

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> SixServices:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self.secrets = write_secrets(self.root / "secrets")
        base = _base_env()
        for name in NAMES:
            port = free_port()
            env = service_env(
                name,
                port=port,
                database_url=self.database_urls[name],
                kafka_bootstrap=self.kafka_bootstrap,
                secrets_=self.secrets,
                files_dir=self.files_dir,
                state_dir=self.root / "state" / name,
            )
            self.procs[name] = Proc(name, port, {**base, **env}, self.logs / f"{name}.log")
        try:
            self.migrate()
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def migrate(self) -> None:
        """`kiban migrate <service>` for all six at once (one database each), as the Helm hook
        Jobs run; a failure names the service and shows its output."""
        running: dict[str, subprocess.Popen[bytes]] = {}
        logs: dict[str, Path] = {}
        try:
            for name, proc in self.procs.items():
                logs[name] = self.logs / f"{name}.migrate.log"
                with logs[name].open("wb") as out:
                    running[name] = subprocess.Popen(
                        [*kiban_command(), "migrate", name],
                        env=proc.env,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
            deadline = time.monotonic() + MIGRATE_TIMEOUT
            for name, child in running.items():
                try:
                    code = child.wait(max(1.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    raise PlatformFailed(
                        f"`kiban migrate {name}` did not finish within {MIGRATE_TIMEOUT:.0f}s; "
                        f"its output:\n{tail_text(logs[name])}"
                    ) from None
                if code != 0:
                    raise PlatformFailed(
                        f"`kiban migrate {name}` exited with {code}; its output:\n"
                        f"{tail_text(logs[name])}"
                    )
        finally:
            for child in running.values():
                if child.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(child.pid, signal.SIGKILL)
                    child.wait()

    def start(self) -> None:
        for name, proc in self.procs.items():
            proc.process = spawn(
                [*kiban_command(), "serve", name],
                log_path=proc.log,
                exit_signal=signal.SIGTERM,
                cwd=self.root,
                env=proc.env,
            )

    def stop(self) -> None:
        """SIGTERM to all (uvicorn shuts down gracefully), then SIGKILL of each process group
        still running after `STOP_TIMEOUT`."""
        live = [p.process for p in self.procs.values() if p.process is not None]
        for process in live:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
        for process in live:
            stop_process(process, signal.SIGTERM, timeout=STOP_TIMEOUT)

    # -- readiness -----------------------------------------------------------------------------

    async def wait_ready(self, within: float = 90.0) -> float:
        """Until all six answer `GET /readyz` 200; seconds it took. A process that exits, or
        one not ready in time, fails with its log's tail (and its last `/readyz` answer)."""
        started = time.monotonic()
        waiting = dict(self.procs)
        last: dict[str, str] = {}
        async with httpx.AsyncClient(timeout=2) as client:
            while waiting:
                for name, proc in list(waiting.items()):
                    assert proc.process is not None
                    code = proc.process.poll()
                    if code is not None:
                        raise PlatformFailed(
                            f"`kiban serve {name}` exited with {code} before it was ready; "
                            f"the end of its output:\n{proc.tail()}"
                        )
                    try:
                        r = await client.get(f"http://{HOST}:{proc.port}/readyz")
                    except httpx.TransportError as exc:
                        last[name] = type(exc).__name__
                        continue
                    last[name] = f"{r.status_code} {r.text[:300]}"
                    if r.status_code == 200:
                        del waiting[name]
                if not waiting:
                    break
                if time.monotonic() - started > within:
                    name = next(iter(waiting))
                    raise PlatformFailed(
                        f"not ready within {within:.0f}s: {', '.join(waiting)}; `{name}` last "
                        f"answered /readyz with: {last.get(name)}; the end of its output:\n"
                        f"{waiting[name].tail()}"
                    )
                await asyncio.sleep(0.25)
        return time.monotonic() - started

    def ports(self) -> dict[str, int]:
        return {name: proc.port for name, proc in self.procs.items()}

    def alive(self) -> dict[str, int | None]:
        """Exit codes of processes that stopped (None: still running)."""
        return {
            name: (p.process.poll() if p.process is not None else None)
            for name, p in self.procs.items()
        }

    def logs_tail(self, lines: int = 15) -> str:
        return "\n".join(f"--- {name} ---\n{proc.tail(lines)}" for name, proc in self.procs.items())


async def start_groups_at_the_end(kafka_bootstrap: str) -> None:
    """Commit, for each service's consumer group, the current end of every topic it reads.

    The session's broker is shared: other tests left events on these topics (encrypted with
    their own keys, about their own persons), and a group that never committed starts at the
    earliest offset. Starting the six groups at "now" keeps those events out of this
    platform's stores, as a fresh deployment on a busy cluster would do by resetting its
    groups' offsets (`kafka-consumer-groups --reset-offsets --to-latest`)."""
    for name in NAMES:
        for group, topics in _groups(name).items():
            await _start_group_at_the_end(kafka_bootstrap, group, topics)


def _groups(name: str) -> dict[str, list[str]]:
    """The service's consumer groups and the topics each reads (a factory of handlers only
    closes over the runtime's context, so a stand-in without one is enough to list them)."""
    definition = SERVICES[name].definition
    consumers = definition.consumers
    groups = consumers(SimpleNamespace(context=None)) if callable(consumers) else consumers
    return {definition.group(suffix): list(handlers) for suffix, handlers in groups.items()}


async def _start_group_at_the_end(kafka_bootstrap: str, group: str, topics: list[str]) -> None:
    # The partitions come from the admin client: a consumer that has not subscribed knows no
    # topic's partitions (`partitions_for_topic` answers None), which once left every group
    # at the earliest offset, replaying other tests' events into this platform.
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        described = await admin.describe_topics([t for t in topics if t in existing])
    finally:
        await admin.close()
    partitions = [
        TopicPartition(entry["topic"], part["partition"])
        for entry in described
        for part in entry["partitions"]
    ]
    if not partitions:
        return
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await consumer.commit(ends)
    finally:
        await consumer.stop()
