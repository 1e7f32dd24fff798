"""Broken tenants of `$FRANKLI_SYNC_CONFIG` as one Airflow import error; this file defines no DAG.

The tenants' DAGs are built by `entra_to_frankli.py` from the valid tenants only. A tenant whose
config is wrong is reported here, by raising while this file is parsed: the import error of this
file names every broken tenant and its field, and the other tenants' DAGs keep running.

Why a second file: the airflow dag-processor (3.3) keys import errors by file, one per file, and marks
every DAG of a file that has an import error stale and `has_import_errors` (not scheduled, hidden in
the UI). Raised from `entra_to_frankli.py`, the error of one tenant would stop them all.

A problem of the whole file (not YAML, a duplicate key, an alias, too big...) fails
`entra_to_frankli.py` itself; it is not repeated here.
"""

from __future__ import annotations

from frankli_sync.config import ConfigError, load_config


def broken_tenants() -> str:
    """The import error's message: every broken tenant and its field ('' when none)."""
    try:
        return load_config().errors_message()
    except ConfigError:  # the whole file is broken: entra_to_frankli.py's import error says why
        return ""


if message := broken_tenants():
    raise ConfigError(message)
