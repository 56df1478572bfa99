"""The anonymization engine: k-anonymity and distinct l-diversity by generalization over
hierarchies, with an optimal full-domain search and a local-recoding algorithm.

Pure: numpy and pandas only, no I/O. See `anonymize`.
"""

from kiban_anonymizer.domain.engine._anonymize import (
    METHODS,
    KAnonymityUnreachable,
    Method,
    Result,
    anonymize,
)
from kiban_anonymizer.domain.engine._hierarchy import Hierarchy
from kiban_anonymizer.domain.engine._report import ClassSizes, PrivacyReport

__all__ = [
    "METHODS",
    "ClassSizes",
    "Hierarchy",
    "KAnonymityUnreachable",
    "Method",
    "PrivacyReport",
    "Result",
    "anonymize",
]
