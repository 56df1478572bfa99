"""Logging that cannot leak: exception messages are cut from every log record.

An exception's message may quote the data it was about (a validation error echoes a name, a
driver error echoes a row). Kiban's own code logs exception types only; this filter holds the
same line for everything else that logs through the root handlers, uvicorn's "Exception in ASGI
application" tracebacks included: the traceback's frames stay, the message goes.
"""

from __future__ import annotations

import logging
import traceback
from types import TracebackType

_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# Loggers of database drivers that write query parameters (rows: names, birth dates) at INFO or
# DEBUG. They are held at WARNING whatever the root level, so turning on DEBUG to chase a bug
# cannot put identity into the logs (tests/security/test_pii_canaries.py proves it).
PARAMETER_LOGGERS = ("aiosqlite", "sqlalchemy.engine", "sqlalchemy.pool", "asyncpg")


def quiet_parameter_loggers() -> None:
    for name in PARAMETER_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET or logger.level < logging.WARNING:
            logger.setLevel(logging.WARNING)


class RedactExceptionMessages(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[0] is not None:
            exc_type, _exc, tb = record.exc_info
            record.exc_text = _without_messages(exc_type, tb)
            record.exc_info = None
        return True


def _without_messages(exc_type: type[BaseException], tb: TracebackType | None) -> str:
    frames = "".join(traceback.format_tb(tb)) if tb is not None else ""
    name = f"{exc_type.__module__}.{exc_type.__qualname__}"
    return f"Traceback (most recent call last):\n{frames}{name}: <message withheld>"


def configure_logging(level: int = logging.INFO) -> None:
    """One stderr handler on the root logger, with the redaction filter; uvicorn's loggers
    propagate to it (run uvicorn with `log_config=None`)."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(_FORMAT))
    handler.addFilter(RedactExceptionMessages())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # readiness polling, one line each
    logging.getLogger("alembic").setLevel(logging.WARNING)  # a line per table on every start
    quiet_parameter_loggers()
