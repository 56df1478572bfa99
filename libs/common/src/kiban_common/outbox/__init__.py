"""The transactional outbox: events commit with the state change and are relayed after."""

from kiban_common.outbox._relay import OutboxRelay, Publish
from kiban_common.outbox._transaction import OutboxWriter, Transaction, transaction

__all__ = ["OutboxRelay", "OutboxWriter", "Publish", "Transaction", "transaction"]
