"""Tables and queries of the review service."""
