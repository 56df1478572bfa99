"""Pure rules of the release service: no framework, no I/O."""
