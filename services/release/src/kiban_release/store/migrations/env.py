from kiban_common.db import run_migrations_env
from kiban_release.store.tables import metadata

run_migrations_env(metadata)
