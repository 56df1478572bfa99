"""Pure rules of the optout service: no framework, no I/O."""
