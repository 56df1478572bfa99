from kiban_anonymizer.store.tables import metadata
from kiban_common.db import run_migrations_env

run_migrations_env(metadata)
