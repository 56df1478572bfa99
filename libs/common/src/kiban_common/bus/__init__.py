"""The event bus: one interface over Kafka (aiokafka) and an in-process broker."""

from kiban_common.bus._bus import Bus
from kiban_common.bus._kafka import KafkaTransport, client_options
from kiban_common.bus._memory import MemoryBroker, MemoryTransport
from kiban_common.bus._runner import (
    ConsumerRunner,
    Handler,
    RunnerStats,
    Transactions,
    dead_letter_topic,
)
from kiban_common.bus._transport import BrokerUnavailable, Consumer, Received, Transport

__all__ = [
    "BrokerUnavailable",
    "Bus",
    "Consumer",
    "ConsumerRunner",
    "Handler",
    "KafkaTransport",
    "MemoryBroker",
    "MemoryTransport",
    "Received",
    "RunnerStats",
    "Transactions",
    "Transport",
    "client_options",
    "dead_letter_topic",
]
