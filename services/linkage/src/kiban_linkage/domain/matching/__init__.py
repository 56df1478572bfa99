"""Japanese identity matching: normalization, blocking, Fellegi–Sunter scoring with EM.

Pure (no I/O, no framework). The service links incoming records with `normalize`,
`blocking_keys` (it stores keyed hashes of them) and `MatchModel.probability`; `kiban link` and
the bench use the vectorized `link` / `dedupe`. See the "Matching engine" section of the
service README for the comparison levels and the rules on top of them.
"""

from kiban_linkage.domain.matching._batch import Links, dedupe, link, score_pairs
from kiban_linkage.domain.matching._blocking import blocking_keys
from kiban_linkage.domain.matching._columns import Columns, GrowingColumns
from kiban_linkage.domain.matching._compare import FIELDS, LEVELS, compare
from kiban_linkage.domain.matching._identity import Identity, Normalized, normalize
from kiban_linkage.domain.matching._index import MatchIndex, TermFactors
from kiban_linkage.domain.matching._model import MatchModel
from kiban_linkage.domain.matching._records import IDENTITY_FIELDS, identity_from_mapping

__all__ = [
    "FIELDS",
    "IDENTITY_FIELDS",
    "LEVELS",
    "Columns",
    "GrowingColumns",
    "Identity",
    "Links",
    "MatchIndex",
    "MatchModel",
    "Normalized",
    "TermFactors",
    "blocking_keys",
    "compare",
    "dedupe",
    "identity_from_mapping",
    "link",
    "normalize",
    "score_pairs",
]
