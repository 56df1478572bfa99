"""Tables and queries of the optout service."""
