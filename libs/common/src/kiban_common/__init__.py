"""Kiban's shared library: what every service uses the same way, and nothing service-specific.

Subpackages: `settings`, `events`, `bus`, `outbox`, `db`, `security`, `crypto`, `telemetry`,
`service`. Each names its public surface in `__all__`; `_modules` are private.
"""

__version__ = "0.1.0"

__all__ = [
    "__version__",
]
