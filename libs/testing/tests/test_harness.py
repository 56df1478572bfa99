"""Tests of the harness itself. They start a real Kafka broker and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from kiban_testing import (
    ExternalPostgres,
    HarnessError,
    KafkaBroker,
    KafkaServer,
    PostgresCluster,
    PostgresServer,
    _install,
    free_port,
)
from kiban_testing.plugin import (
    ENV_DATABASE_URL,
    ENV_KAFKA_BOOTSTRAP,
    external_kafka_from_env,
    external_postgres_from_env,
)
from kiban_testing.postgres import database_url


def _topic() -> str:
    return f"harness-{uuid.uuid4().hex[:12]}"


async def _consume(bootstrap: str, topic: str, count: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        values: list[bytes] = []
        async with asyncio.timeout(30):
            while len(values) < count:
                message = await consumer.getone()
                values.append(message.value)
        return values
    finally:
        await consumer.stop()


async def _select_one(url: str) -> tuple[int, str]:
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow("select 1 as one, current_database() as db")
        assert row is not None
        return row["one"], row["db"]
    finally:
        await conn.close()


# -- no servers needed -------------------------------------------------------------------------


def test_free_port_can_be_bound() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_database_names_are_validated() -> None:
    server = ExternalPostgres("postgresql://u@db.invalid:5432/app")
    for bad in ["", "Upper", "semi;colon", 'quote"d', "x" * 64, "dash-ed"]:
        with pytest.raises(ValueError, match="must be 1-63 characters"):
            server.create_database(bad)


def test_external_servers_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_KAFKA_BOOTSTRAP, raising=False)
    monkeypatch.delenv(ENV_DATABASE_URL, raising=False)
    assert external_kafka_from_env() is None
    assert external_postgres_from_env() is None

    given = "postgresql://app:secret@db.example:5433/app?sslmode=disable"
    monkeypatch.setenv(ENV_DATABASE_URL, given)
    monkeypatch.setenv(ENV_KAFKA_BOOTSTRAP, "kafka.example:9092")
    postgres = external_postgres_from_env()
    kafka = external_kafka_from_env()
    assert postgres is not None
    assert kafka is not None
    assert postgres.url == given
    assert (
        database_url(given, "t_1") == "postgresql://app:secret@db.example:5433/t_1?sslmode=disable"
    )
    assert kafka.bootstrap == "kafka.example:9092"
    with pytest.raises(pytest.skip.Exception, match="external broker"):
        kafka.stop()
    with pytest.raises(pytest.skip.Exception, match="external broker"):
        kafka.restart()


def test_missing_tool_without_root_names_it_and_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(HarnessError, match=r"`kiban-no-such-tool` not found.*apt-get install x"):
        _install.require_command("kiban-no-such-tool", package="x", hint="apt-get install x")


def test_broker_without_jars_fails_clearly(tmp_path: Path) -> None:
    broker = KafkaBroker(jars_dir=tmp_path)
    with pytest.raises(HarnessError, match="no jars"):
        broker.start()
    broker.close()


# -- Kafka -------------------------------------------------------------------------------------


async def test_produced_message_is_consumed(kafka_bootstrap: str) -> None:
    topic = _topic()
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"hello")
    finally:
        await producer.stop()
    assert await _consume(kafka_bootstrap, topic, 1) == [b"hello"]


async def test_restart_keeps_address_and_data(kafka_broker: KafkaServer) -> None:
    bootstrap = kafka_broker.bootstrap
    topic = _topic()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"before")
        kafka_broker.stop()  # skips the test for an external broker
        assert isinstance(kafka_broker, KafkaBroker)
        assert not kafka_broker.running
        kafka_broker.start()
        assert kafka_broker.running
        assert kafka_broker.bootstrap == bootstrap
        # The same producer reconnects to the restarted broker.
        await producer.send_and_wait(topic, b"after")
    finally:
        await producer.stop()
    assert await _consume(bootstrap, topic, 2) == [b"before", b"after"]


def test_failed_start_reports_broker_output(kafka_broker: KafkaServer) -> None:
    if not isinstance(kafka_broker, KafkaBroker):
        pytest.skip("needs the harness's own broker")
    kafka_broker.stop()
    try:
        with socket.socket() as squatter:
            # Connections of the stopped broker linger in TIME_WAIT; a listener is what counts.
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            squatter.bind(("127.0.0.1", kafka_broker.port))
            squatter.listen()
            with pytest.raises(HarnessError, match="exited with code") as failure:
                kafka_broker.start()
        assert "Address already in use" in str(failure.value)
        assert not kafka_broker.running
    finally:
        kafka_broker.start()
    assert kafka_broker.running


# -- PostgreSQL --------------------------------------------------------------------------------


async def test_create_database_gives_a_fresh_connectable_database(
    postgres_cluster: PostgresServer,
) -> None:
    url = postgres_cluster.create_database("harness_check")
    assert url.endswith("/harness_check")
    assert await _select_one(url) == (1, "harness_check")
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("create table leftover (id int)")
    finally:
        await conn.close()

    again = postgres_cluster.create_database("harness_check")
    conn = await asyncpg.connect(again)
    try:
        assert await conn.fetchval("select to_regclass('leftover')") is None
    finally:
        await conn.close()
    postgres_cluster.drop_database("harness_check")


async def test_postgres_url_is_a_database_of_its_own(postgres_url: str) -> None:
    one, name = await _select_one(postgres_url)
    assert one == 1
    assert name.startswith("t_")
    assert postgres_url.endswith("/" + name)


async def test_server_settings_reach_a_cluster_of_its_own(postgres_cluster: PostgresServer) -> None:
    # postgres_cluster: the fixture installs PostgreSQL first on a fresh machine
    with PostgresCluster(server_settings={"work_mem": "7MB"}) as cluster:
        conn = await asyncpg.connect(cluster.url)
        try:
            assert await conn.fetchval("show work_mem") == "7MB"
        finally:
            await conn.close()


async def test_external_server_creates_databases_on_that_server(
    postgres_cluster: PostgresServer,
) -> None:
    external = ExternalPostgres(postgres_cluster.url)
    url = external.create_database("harness_external")
    assert url == database_url(postgres_cluster.url, "harness_external")
    assert await _select_one(url) == (1, "harness_external")
    external.drop_database("harness_external")

    # The same through PostgresCluster(url=...), which then starts nothing.
    with PostgresCluster(url=postgres_cluster.url) as cluster:
        assert cluster.url == postgres_cluster.url
        url = cluster.create_database("harness_external")
        assert await _select_one(url) == (1, "harness_external")
        cluster.drop_database("harness_external")
    assert await _select_one(postgres_cluster.url) == (1, "postgres")  # still running


# -- the plugin against external servers, in a pytest of its own --------------------------------

_INNER_TESTS = """
import asyncio
import os

import asyncpg


def test_fixtures_use_the_environment(kafka_broker, kafka_bootstrap, postgres_cluster):
    assert kafka_bootstrap == "kafka.example:9092" == kafka_broker.bootstrap
    assert postgres_cluster.url == os.environ["KIBAN_TEST_DATABASE_URL"]


def test_stopping_an_external_broker_skips(kafka_broker):
    kafka_broker.stop()
    raise AssertionError("not skipped")


def test_postgres_url_is_on_the_external_server(postgres_url):
    async def current_database():
        conn = await asyncpg.connect(postgres_url)
        try:
            return await conn.fetchval("select current_database()")
        finally:
            await conn.close()

    server = os.environ["KIBAN_TEST_DATABASE_URL"].rsplit("/", 1)[0]
    assert postgres_url.startswith(server + "/t_")
    assert asyncio.run(current_database()) == postgres_url.rsplit("/", 1)[1]
"""


def test_plugin_uses_external_servers_from_environment(
    postgres_cluster: PostgresServer, tmp_path: Path
) -> None:
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(_INNER_TESTS))
    env = {
        **os.environ,
        ENV_KAFKA_BOOTSTRAP: "kafka.example:9092",
        ENV_DATABASE_URL: postgres_cluster.url,
    }
    env.pop("PYTEST_ADDOPTS", None)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_inner.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed, 1 skipped" in result.stdout, result.stdout
