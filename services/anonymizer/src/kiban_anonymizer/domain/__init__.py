"""Pure rules of the anonymizer service: no framework, no I/O."""
