"""Pure rules of the linkage service: no framework, no I/O."""
