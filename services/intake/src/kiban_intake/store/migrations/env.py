from kiban_common.db import run_migrations_env
from kiban_intake.store.tables import metadata

run_migrations_env(metadata)
