"""Tables and queries of the anonymizer service."""
