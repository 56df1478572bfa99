"""Field types shared by event data models."""

from __future__ import annotations

from typing import Annotated

from pydantic import StringConstraints

# An encrypted value: `v1.<kid>.<...>` (field cipher, core keys) or `s1.<kid>.<...>` (sealed to
# the core zone's public key). A model that holds identity declares it with these types so a
# plaintext value cannot be put into an identifiable event by mistake.
Encrypted = Annotated[str, StringConstraints(pattern=r"^v1\.[A-Za-z0-9_-]{1,32}\.[A-Za-z0-9_-]+$")]
Sealed = Annotated[str, StringConstraints(pattern=r"^s1\.[A-Za-z0-9_-]{1,64}\.[A-Za-z0-9_-]+$")]

# A person pseudonym: a keyed hash published by linkage; never derived from identity alone.
Pseudonym = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{16,128}$")]
Code = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
