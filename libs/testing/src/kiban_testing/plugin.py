"""pytest plugin (entry point ``kiban``): a real Kafka broker and PostgreSQL for the session.

Fixtures start their server only when a test first asks for it, so a run of unit tests pays
nothing. Each server is started once per session and always stopped at the end, also when
tests fail. Setting ``KIBAN_TEST_KAFKA_BOOTSTRAP`` or ``KIBAN_TEST_DATABASE_URL`` points the
fixtures at servers that already run (a CI service container, a developer's compose stack)
instead of starting ours.

Fixtures: ``kafka_broker``, ``kafka_bootstrap``, ``postgres_cluster`` (session scope) and
``postgres_url`` (a fresh database for each test).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import sys
import time
from typing import TYPE_CHECKING

import pytest

from kiban_testing.kafka import KAFKA_VERSION, KafkaBroker, KafkaServer
from kiban_testing.postgres import ExternalPostgres, PostgresCluster, PostgresServer

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "ENV_DATABASE_URL",
    "ENV_KAFKA_BOOTSTRAP",
    "ExternalKafka",
    "external_kafka_from_env",
    "external_postgres_from_env",
    "kafka_bootstrap",
    "kafka_broker",
    "postgres_cluster",
    "postgres_url",
]

ENV_KAFKA_BOOTSTRAP = "KIBAN_TEST_KAFKA_BOOTSTRAP"
ENV_DATABASE_URL = "KIBAN_TEST_DATABASE_URL"

_KAFKA_FIXTURES = frozenset({"kafka_broker", "kafka_bootstrap"})
_POSTGRES_FIXTURES = frozenset({"postgres_cluster", "postgres_url"})
_session_broker = pytest.StashKey[KafkaBroker]()
_database_numbers = itertools.count(1)


class ExternalKafka:
    """A broker someone else runs. Tests that would stop or restart it are skipped."""

    def __init__(self, bootstrap: str) -> None:
        self._bootstrap = bootstrap

    @property
    def bootstrap(self) -> str:
        return self._bootstrap

    def start(self) -> None:
        """Nothing to do: an external broker is assumed to be running."""

    def stop(self) -> None:
        pytest.skip(f"external broker {self._bootstrap} ({ENV_KAFKA_BOOTSTRAP}) cannot be stopped")

    def restart(self) -> None:
        pytest.skip(
            f"external broker {self._bootstrap} ({ENV_KAFKA_BOOTSTRAP}) cannot be restarted"
        )

    def __repr__(self) -> str:
        return f"<ExternalKafka {self._bootstrap}>"


def external_kafka_from_env() -> ExternalKafka | None:
    """The broker named by ``KIBAN_TEST_KAFKA_BOOTSTRAP``, if set."""
    bootstrap = os.environ.get(ENV_KAFKA_BOOTSTRAP, "").strip()
    return ExternalKafka(bootstrap) if bootstrap else None


def external_postgres_from_env() -> ExternalPostgres | None:
    """The server named by ``KIBAN_TEST_DATABASE_URL``, if set."""
    url = os.environ.get(ENV_DATABASE_URL, "").strip()
    return ExternalPostgres(url) if url else None


def _announce(config: pytest.Config, message: str) -> None:
    """One line on the real terminal, even while pytest captures output."""
    capman = config.pluginmanager.get_plugin("capturemanager")
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    suspended = (
        capman.global_and_fixture_disabled() if capman is not None else contextlib.nullcontext()
    )
    with suspended:
        if reporter is not None:
            reporter.ensure_newline()  # after a file name and its progress dots
            if config.get_terminal_writer().width_of_current_line:  # after -q progress dots
                reporter.write("\n")
            reporter.write_line(f"[kiban] {message}")
        else:
            sys.stderr.write(f"[kiban] {message}\n")


# -- hooks -------------------------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "kafka: needs the real Kafka broker started by the harness")
    config.addinivalue_line("markers", "postgres: needs the real PostgreSQL started by the harness")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests by the servers they use, so ``-m "not kafka"`` deselects them."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & _KAFKA_FIXTURES:
            item.add_marker(pytest.mark.kafka)
        if names & _POSTGRES_FIXTURES:
            item.add_marker(pytest.mark.postgres)


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    """Bring back the session broker if a test stopped it and did not restart it."""
    broker = item.config.stash.get(_session_broker, None)
    if broker is not None and not broker.running:
        started = time.monotonic()
        broker.start()
        elapsed = time.monotonic() - started
        _announce(item.config, f"{item.nodeid} left the Kafka broker stopped; restarted it "
                  f"in {elapsed:.1f} s")  # fmt: skip


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kafka_broker(request: pytest.FixtureRequest) -> Iterator[KafkaServer]:
    """The session's Kafka broker: ours (a :class:`KafkaBroker`) or the external one."""
    external = external_kafka_from_env()
    if external is not None:
        yield external
        return
    broker = KafkaBroker()
    try:
        started = time.monotonic()
        broker.start()
        elapsed = time.monotonic() - started
        _announce(request.config, f"Kafka {KAFKA_VERSION} broker at {broker.bootstrap} "
                  f"started in {elapsed:.1f} s")  # fmt: skip
        request.config.stash[_session_broker] = broker
        yield broker
    finally:
        with contextlib.suppress(KeyError):
            del request.config.stash[_session_broker]
        broker.close()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: KafkaServer) -> str:
    """``bootstrap_servers`` of the session's broker, e.g. ``127.0.0.1:39093``."""
    return kafka_broker.bootstrap


@pytest.fixture(scope="session")
def postgres_cluster(request: pytest.FixtureRequest) -> Iterator[PostgresServer]:
    """The session's PostgreSQL: ours (a :class:`PostgresCluster`) or the external one."""
    external = external_postgres_from_env()
    if external is not None:
        yield external
        return
    cluster = PostgresCluster()
    try:
        started = time.monotonic()
        cluster.start()
        elapsed = time.monotonic() - started
        _announce(request.config, f"PostgreSQL at 127.0.0.1:{cluster.port} started in "
                  f"{elapsed:.1f} s")  # fmt: skip
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def postgres_url(request: pytest.FixtureRequest, postgres_cluster: PostgresServer) -> Iterator[str]:
    """URL of an empty database made for this test alone, dropped afterwards.

    The name comes from a hash of the test's node id, this process's id (sessions sharing an
    external server never collide) and a counter.
    """
    digest = hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:12]
    name = f"t_{digest}_{os.getpid()}_{next(_database_numbers)}"
    url = postgres_cluster.create_database(name)
    yield url
    postgres_cluster.drop_database(name)
