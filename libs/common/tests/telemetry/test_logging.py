from __future__ import annotations

import io
import logging

from kiban_common.telemetry import RedactExceptionMessages

CANARY = "山田太郎 1980-01-02"


def test_exception_message_is_withheld_but_type_and_frames_stay() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactExceptionMessages())
    logger = logging.getLogger("kiban.test.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        try:
            raise ValueError(f"could not match {CANARY}")
        except ValueError:
            logger.exception("Exception in ASGI application")
    finally:
        logger.removeHandler(handler)
    output = stream.getvalue()
    assert CANARY not in output
    assert "builtins.ValueError: <message withheld>" in output
    assert "test_logging.py" in output  # the frames are kept for debugging
