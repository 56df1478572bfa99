"""Event handlers of the release service, by consumer group suffix and event type."""

from kiban_common.bus import Handler

handlers: dict[str, dict[str, Handler]] = {}
