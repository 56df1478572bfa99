"""Pure rules of the intake service: no framework, no I/O."""
