"""Tables and queries of the release service."""
