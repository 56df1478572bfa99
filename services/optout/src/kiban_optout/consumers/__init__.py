"""Event handlers of the optout service, by consumer group suffix and event type."""

from kiban_optout.consumers.applied import handlers

__all__ = ["handlers"]
