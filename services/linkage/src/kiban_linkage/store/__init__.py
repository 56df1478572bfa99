"""Tables and queries of the linkage service."""
