"""Incremental linking of `record-received` events (convention 1 in, convention 4 out).

The consumer runner applies a batch of events in one transaction; the records of a batch are
linked together (`link_records`) so a batch costs a handful of round trips, not several per
record. For each record, in arrival order:

1. Open the identity and the resources; normalize the identity; blind-index its blocking keys.
2. Candidates: the records of this replica's match index in memory sharing a blocking key
   (`domain.index.VaultIndex`, kept in step with the vault under the vault lock: `replica`),
   plus the same institution patient; the records linked earlier in the batch count too.
3. Score every candidate with the model in force, in memory; read the few at or above the
   possible band from the vault (current person, still there); link at the link threshold,
   record the "possible" band for review (never linked).
4. A record whose person is blocked (for its institution or all) is neither stored nor
   forwarded. Otherwise it joins its person (several persons: they merge and the event's
   `merged_from` names the absorbed pseudonyms) or a new one with a random key; its identity
   goes into the vault encrypted, its blocking keys as blind indexes.
5. A record that matches an opt-out block entry at the strict threshold puts that opt-out in
   force for its person (blocked; for `stop_and_delete` its vault records, this one included,
   are deleted; `person-purged` if the person had been forwarded before) and is not forwarded.
   Otherwise `record-linked` carries the stripped resources and the demographics.
"""

from kiban_linkage.domain.linked import SOURCE
from kiban_linkage.linking._batch import Outcome
from kiban_linkage.linking._link import link_record, link_records
from kiban_linkage.linking._pending import PendingRecords
from kiban_linkage.linking._purge import Action, apply_block

__all__ = [
    "SOURCE",
    "Action",
    "Outcome",
    "PendingRecords",
    "apply_block",
    "link_record",
    "link_records",
]
