"""Tables and queries of the intake service."""
