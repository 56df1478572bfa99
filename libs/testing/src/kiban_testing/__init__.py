"""Kiban's test harness: real infrastructure for tests, started on demand.

``KafkaBroker`` runs a single-node Apache Kafka (KRaft) from Maven Central jars on the local
JDK; ``PostgresCluster`` runs a throwaway PostgreSQL cluster from Debian's packages. Both are
plain context managers usable from benches and scripts; the pytest plugin
(:mod:`kiban_testing.plugin`, loaded automatically) wraps them in session fixtures.
"""

from kiban_testing._errors import HarnessError
from kiban_testing._ports import free_port
from kiban_testing._process import process_cpu_seconds
from kiban_testing.kafka import KAFKA_VERSION, KafkaBroker, KafkaServer, kafka_jars
from kiban_testing.postgres import ExternalPostgres, PostgresCluster, PostgresServer
from kiban_testing.services import (
    RunningService,
    embedded_settings,
    eventually,
    running_service,
    until_ready,
)

__all__ = [
    "KAFKA_VERSION",
    "ExternalPostgres",
    "HarnessError",
    "KafkaBroker",
    "KafkaServer",
    "PostgresCluster",
    "PostgresServer",
    "RunningService",
    "embedded_settings",
    "eventually",
    "free_port",
    "kafka_jars",
    "process_cpu_seconds",
    "running_service",
    "until_ready",
]
