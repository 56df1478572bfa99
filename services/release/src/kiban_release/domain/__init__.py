"""Pure rules of the release service: no framework, no I/O.

`release` (statuses, what may happen to a release), `access` (who may download what, when),
`manifest` (the signed traceability record), `tariff` (the fee statement) and `trace` (which
release a leaked file came from).
"""
