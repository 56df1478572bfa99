"""Who may call a Kiban API and what is kept of each call.

Bearer tokens (JWT, asymmetric signatures only) verified against the issuer's JWKS into a
`Principal`; FastAPI dependencies for scopes and zones; error handlers that answer
`{"code", "message"}` without echoing input; the zone guard for core-zone networks; the
append-only audit log of every request; and a development token issuer.

Claims can hold personal data: they are on `Principal.claims` for the code that needs them and
nowhere else (not in reprs, error messages, logs or the audit log).
"""

from kiban_common.security._append_only import append_only_ddl, chained_log_ddl
from kiban_common.security._audit import (
    AUDIT_ANCHORS_TABLE,
    AUDIT_TABLE,
    REQUEST_ID_HEADER,
    AuditLog,
    AuditMiddleware,
    AuditRecord,
    audit_table,
    verify_audit_log,
)
from kiban_common.security._blocks import BLOCKS_TABLE, blocks_table
from kiban_common.security._chain import ChainReport
from kiban_common.security._chain import verify as verify_chain
from kiban_common.security._dependencies import (
    bearer_principal,
    require_scope,
    zone_principal_guard,
)
from kiban_common.security._dev_issuer import DevIssuer
from kiban_common.security._errors import ApiError, AuthenticationError
from kiban_common.security._handlers import install_error_handlers
from kiban_common.security._jose import ALLOWED_ALGORITHMS
from kiban_common.security._keys import FileKeySource, KeySource, StaticKeySource, UrlKeySource
from kiban_common.security._limits import BodyLimitMiddleware, RateLimitMiddleware
from kiban_common.security._policy import breached_rule, within
from kiban_common.security._principal import Principal, PrincipalKind
from kiban_common.security._verifier import TokenVerifier
from kiban_common.security._zone import (
    DEFAULT_CORE_KINDS,
    DEFAULT_EXEMPT_PATHS,
    ZoneGuard,
    principal_allowed_in_zone,
)

__all__ = [
    "ALLOWED_ALGORITHMS",
    "AUDIT_ANCHORS_TABLE",
    "AUDIT_TABLE",
    "BLOCKS_TABLE",
    "DEFAULT_CORE_KINDS",
    "DEFAULT_EXEMPT_PATHS",
    "REQUEST_ID_HEADER",
    "ApiError",
    "AuditLog",
    "AuditMiddleware",
    "AuditRecord",
    "AuthenticationError",
    "BodyLimitMiddleware",
    "ChainReport",
    "DevIssuer",
    "FileKeySource",
    "KeySource",
    "Principal",
    "PrincipalKind",
    "RateLimitMiddleware",
    "StaticKeySource",
    "TokenVerifier",
    "UrlKeySource",
    "ZoneGuard",
    "append_only_ddl",
    "audit_table",
    "bearer_principal",
    "blocks_table",
    "breached_rule",
    "chained_log_ddl",
    "install_error_handlers",
    "principal_allowed_in_zone",
    "require_scope",
    "verify_audit_log",
    "verify_chain",
    "within",
    "zone_principal_guard",
]
