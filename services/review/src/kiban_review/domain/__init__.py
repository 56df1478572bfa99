"""Pure rules of the review service: no framework, no I/O."""
